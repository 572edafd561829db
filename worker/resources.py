"""The resources filters and data activities may name: their fields, links and extensions.

A `Catalog` holds its own copies of the marketing tables, plus what a deployment declares
in the YAML file named by CARILLON_DATA_MODEL (extra profile columns, whole new
resources), so two catalogs never share mutable table objects. `install()` creates the
declared tables and columns that are missing; it never drops or alters anything else.

```yaml
profile:
  columns: {loyaltyTier: string, points: integer}
resources:
  store:
    columns: {code: string, city: string, openedOn: date}
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    FromClause,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from worker import marketing, models  # noqa: F401  (the organization table, for foreign keys)
from worker.db import UTCDateTime
from worker.errors import ConfigError, FilterError

#: Field kinds a data model may declare, and their column types.
KINDS: dict[str, TypeEngine[Any]] = {
    "string": String(255),
    "text": Text(),
    "integer": BigInteger(),
    "number": Float(),
    "boolean": Boolean(),
    "date": Date(),
    "datetime": UTCDateTime(),
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,47}")
_RESERVED = frozenset({"id", "org", "orgId", "vars", "counts"})
_MAX_EXTENSION_COLUMNS = 200
_MAX_EXTENSION_RESOURCES = 50


@dataclass(frozen=True)
class Field:
    """One attribute a filter or a file column can name."""

    name: str
    column: ColumnElement[Any]
    kind: str


@dataclass(frozen=True)
class Link:
    """A one-to-many link (`subscriptions`): a filter on it means "some linked row matches"."""

    name: str
    source: FromClause
    #: Correlates a linked row with the outer resource row.
    on: ColumnElement[bool]
    fields: Mapping[str, Field]


@dataclass(frozen=True)
class Resource:
    """A table of the marketing database as filters see it."""

    name: str
    table: Table
    fields: Mapping[str, Field]
    links: Mapping[str, Link] = field(default_factory=dict)
    #: Fields added by the deployment's data model (written by loadFile and updateData).
    extension_fields: tuple[str, ...] = ()

    @property
    def key(self) -> ColumnElement[Any]:
        return self.table.c.id

    @property
    def org(self) -> ColumnElement[Any]:
        return self.table.c.org_id

    def field(self, name: str, *, where: str = "field") -> Field:
        found = self.fields.get(name)
        if found is None:
            raise FilterError(
                f"{where}: unknown field {name!r} of resource '{self.name}'",
                details={"path": where, "field": name[:64]},
            )
        return found

    def writable(self) -> dict[str, Field]:
        """Fields that loads and updates may write (not the id, org or timestamps)."""
        hidden = {"id", "created", "lastModified"}
        return {name: f for name, f in self.fields.items() if name not in hidden}


class Catalog:
    """Resources by name, built from the marketing tables and an optional data model."""

    def __init__(self, data_model: Mapping[str, Any] | None = None) -> None:
        self.metadata = MetaData(naming_convention=marketing.metadata.naming_convention)
        # Copies, so appending extension columns never touches the shared tables.
        tables = {
            name: marketing.metadata.tables[name].to_metadata(self.metadata)
            for name in ("organization", "profile", "service", "subscription", "audience")
        }
        model = _check_model(data_model or {})
        profile_extra = _add_columns(tables["profile"], model.get("profile", {}))
        self.resources: dict[str, Resource] = {}
        self.resources["profile"] = Resource(
            "profile",
            tables["profile"],
            _fields(tables["profile"]),
            {"subscriptions": _subscriptions(tables)},
            tuple(profile_extra),
        )
        self.resources["service"] = Resource(
            "service", tables["service"], _fields(tables["service"])
        )
        for name, spec in model.get("resources", {}).items():
            table = Table(
                f"x_{_snake(name)}",
                self.metadata,
                Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
                Column("org_id", ForeignKey("organization.id"), nullable=False, index=True),
            )
            extra = _add_columns(table, spec)
            self.resources[name] = Resource(name, table, _fields(table), {}, tuple(extra))
        self.extension_tables = [self.resources[name].table for name in model.get("resources", {})]

    def get(self, name: str) -> Resource:
        found = self.resources.get(name)
        if found is None:
            known = ", ".join(sorted(self.resources))
            raise FilterError(f"unknown resource {name!r} (known: {known})")
        return found

    def install(self, engine: Engine) -> list[str]:
        """Create the declared tables and columns that are missing; returns what it did."""
        done: list[str] = []
        self.metadata.create_all(engine, tables=self.extension_tables, checkfirst=True)
        with engine.begin() as connection:
            existing = {c["name"] for c in inspect(connection).get_columns("profile")}
            preparer = connection.dialect.identifier_preparer
            for name in self.resources["profile"].extension_fields:
                column = self.resources["profile"].table.c[name]
                if column.name in existing:
                    continue
                kind = column.type.compile(dialect=connection.dialect)
                # Both names come from _check_model (letters and digits only), quoted anyway.
                connection.execute(
                    text(
                        f"ALTER TABLE {preparer.quote('profile')} "
                        f"ADD COLUMN {preparer.quote(column.name)} {kind}"
                    )
                )
                done.append(f"profile.{column.name}")
        done.extend(table.name for table in self.extension_tables)
        return done


def load_data_model(path: str | Path | None) -> dict[str, Any]:
    """Read the CARILLON_DATA_MODEL file (YAML or JSON); empty when no path is set."""
    if not path:
        return {}
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"CARILLON_DATA_MODEL: cannot read {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"CARILLON_DATA_MODEL: {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("CARILLON_DATA_MODEL: the file must hold an object")
    _check_model(loaded)  # fail at load time, with the file's name in mind
    return loaded


def _check_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a data model; return `{"profile": {name: kind}, "resources": {...}}`."""
    unknown = set(model) - {"profile", "resources"}
    if unknown:
        raise ConfigError(f"CARILLON_DATA_MODEL: unknown key(s) {sorted(map(str, unknown))}")
    checked: dict[str, Any] = {}
    profile = model.get("profile") or {}
    if not isinstance(profile, Mapping) or set(profile) - {"columns"}:
        raise ConfigError("CARILLON_DATA_MODEL: 'profile' takes only 'columns'")
    checked["profile"] = _check_columns(profile.get("columns") or {}, "profile")
    base = {f.name for f in _fields(marketing.profile).values()} | {"subscriptions"}
    clash = base & set(checked["profile"])
    if clash:
        raise ConfigError(f"CARILLON_DATA_MODEL: profile already has {sorted(clash)}")
    resources = model.get("resources") or {}
    if not isinstance(resources, Mapping) or len(resources) > _MAX_EXTENSION_RESOURCES:
        raise ConfigError(
            f"CARILLON_DATA_MODEL: 'resources' must map at most {_MAX_EXTENSION_RESOURCES} "
            "names to {columns}"
        )
    checked["resources"] = {}
    for name, spec in resources.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in ("profile", "service"):
            raise ConfigError(f"CARILLON_DATA_MODEL: invalid resource name {name!r}")
        if not isinstance(spec, Mapping) or set(spec) - {"columns"}:
            raise ConfigError(f"CARILLON_DATA_MODEL: resource {name!r} takes only 'columns'")
        checked["resources"][name] = _check_columns(spec.get("columns") or {}, name)
    return checked


def _check_columns(columns: object, owner: str) -> dict[str, str]:
    if not isinstance(columns, Mapping) or len(columns) > _MAX_EXTENSION_COLUMNS:
        raise ConfigError(
            f"CARILLON_DATA_MODEL: {owner}.columns must map at most "
            f"{_MAX_EXTENSION_COLUMNS} names to kinds"
        )
    checked: dict[str, str] = {}
    snakes: set[str] = set()
    for name, kind in columns.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
            raise ConfigError(f"CARILLON_DATA_MODEL: invalid column name {name!r} in {owner}")
        if kind not in KINDS:
            raise ConfigError(
                f"CARILLON_DATA_MODEL: {owner}.{name}: kind must be one of {', '.join(KINDS)}"
            )
        if _snake(name) in snakes:
            raise ConfigError(f"CARILLON_DATA_MODEL: {owner}.{name} clashes with another column")
        snakes.add(_snake(name))
        checked[name] = kind
    return checked


def _add_columns(table: Table, columns: Mapping[str, str]) -> list[str]:
    for name, kind in columns.items():
        table.append_column(Column(_snake(name), KINDS[kind], key=name))
    return list(columns)


def _fields(table: Table) -> dict[str, Field]:
    found: dict[str, Field] = {}
    for column in table.columns:
        if column.key == "org_id":
            continue
        found[column.key] = Field(column.key, column, kind_of(column.type) or "string")
    return found


def kind_of(type_: TypeEngine[Any]) -> str | None:
    """The field kind of a column type (declared or reflected); None when it is none of them."""
    if isinstance(type_, Boolean):
        return "boolean"
    if isinstance(type_, UTCDateTime | DateTime):
        return "datetime"
    if isinstance(type_, Date):
        return "date"
    if isinstance(type_, Integer):
        return "integer"
    if isinstance(type_, Float | Numeric):
        return "number"
    if isinstance(type_, String):
        return "string"
    return None


def _subscriptions(tables: Mapping[str, Table]) -> Link:
    sub, svc = tables["subscription"], tables["service"]
    source = sub.join(svc, svc.c.id == sub.c.serviceId)
    fields = {
        "service": Field("service", svc.c.name, "string"),
        "serviceLabel": Field("serviceLabel", svc.c.label, "string"),
        "channel": Field("channel", svc.c.channel, "string"),
        "created": Field("created", sub.c.created, "datetime"),
    }
    return Link("subscriptions", source, sub.c.profileId == tables["profile"].c.id, fields)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_CATALOGS: dict[str, Catalog] = {}


def catalog_for(data_model: str) -> Catalog:
    """The catalog of a CARILLON_DATA_MODEL path (empty: the built-in resources), cached."""
    found = _CATALOGS.get(data_model)
    if found is None:
        found = _CATALOGS[data_model] = Catalog(load_data_model(data_model))
    return found
