"""Targeting on populations: set operations, segmentation, dedup, enrichment, audiences.

Every activity here is set-based: each output is one `CREATE TABLE ... AS SELECT` through
`populations.create`, nothing is loaded into Python. Inbound populations are checked to be
working tables of the workflow's organization; activities that read a resource's fields
join it back on the id and the organization (a LEFT JOIN where every inbound record must
stay: a record deleted since is then treated as having no values).

Counts: `counts[<activity>]` is the size of the main output (for segmentation, of the
input); further outputs are `counts["<activity>_<outlet>"]` (`seg1_gold`,
`dedup1_duplicates`), which a test condition reads as `counts.seg1_gold` (a dotted key
could not be read: the filter DSL walks dots into nested objects).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    and_,
    case,
    cast,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import ColumnElement

from worker import expressions, filters, populations, sqlfilter
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome
from worker.errors import ActivityError, DefinitionError, FilterError
from worker.marketing import audience, audience_member, working_table
from worker.registry import register
from worker.resources import Field, Link, Resource, catalog_for

#: Segment and column names: identifiers that every database keeps as they are.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
#: Resource field names (built-in and data-model ones are camelCase letters and digits).
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_ACTIVITY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_AUDIENCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SEGMENTS = 50
MAX_COLUMNS = 100
MAX_KEY_FIELDS = 20
MAX_LABEL = 255
MAX_COUNT = 2**63 - 1
AGGREGATES = ("count", "min", "max", "sum")
#: Segmentation writes at most this many outputs straight from the input (ORDER BY ...
#: OFFSET/LIMIT, PostgreSQL's cheap top-N sorts); past it, or with filters, it numbers the
#: input once and assigns every record its segment in one statement.
DIRECT_OUTPUTS_MAX = 3
REMAINDER = "remainder"
# A shuffle key computable in plain SQL on both databases: an affine step modulo a prime
# (a permutation of the ids) then a square modulo another prime (breaks the lattice an
# affine map leaves). Every intermediate stays below 2**62, so int64 never overflows.
_PRIME_1 = 2_147_483_647
_PRIME_2 = 2_147_483_629
_MULTIPLIER = 1_103_515_245
_OFFSET = 12_345


# -- save-time checks ------------------------------------------------------------------------


def _check_field_name(value: object, where: str) -> str | None:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
        return f"{where}: unknown field {_show(value)}"
    return None


def _check_order(value: Any) -> str | None:
    if not isinstance(value, Mapping) or set(value) - {"field", "direction"}:
        return "must be {field, direction}"
    problem = _check_field_name(value.get("field"), "field")
    if problem:
        return problem
    if value.get("direction", "asc") not in ("asc", "desc"):
        return "direction must be 'asc' or 'desc'"
    return None


def _check_segment(index: int, segment: Any) -> str | None:
    where = f"segments[{index}]"
    if not isinstance(segment, Mapping) or set(segment) - {"name", "filter", "percent", "count"}:
        return f"{where} must be {{name, filter?, percent?, count?}}"
    name = segment.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or name == REMAINDER:
        return (
            f"{where}.name must be an identifier (letters, digits, '_', at most 63) "
            f"other than '{REMAINDER}'"
        )
    if not {"filter", "percent", "count"} & set(segment):
        return f"{where}: give a filter, a percent or a count"
    percent = segment.get("percent", 0)
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
    ):
        return f"{where}.percent must be a number from 0 to 100"
    count = segment.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        return f"{where}.count must be a whole number >= 0"
    if "filter" in segment:
        try:
            filters.validate_filter(segment["filter"], where=f"{where}.filter")
        except FilterError as exc:
            return exc.message
    return None


def _check_segments(value: Any) -> str | None:
    if not isinstance(value, list) or not value or len(value) > MAX_SEGMENTS:
        return f"must be a list of 1 to {MAX_SEGMENTS} segments"
    seen: set[str] = set()
    for index, segment in enumerate(value):
        problem = _check_segment(index, segment)
        if problem:
            return problem
        if segment["name"] in seen:
            return f"segment name '{segment['name']}' is used twice"
        seen.add(segment["name"])
    return None


def _check_key_fields(value: Any) -> str | None:
    if not isinstance(value, list) or not value or len(value) > MAX_KEY_FIELDS:
        return f"must be a list of 1 to {MAX_KEY_FIELDS} field names"
    for index, name in enumerate(value):
        problem = _check_field_name(name, f"fields[{index}]")
        if problem:
            return problem
    if len(set(value)) != len(value):
        return "a field is listed twice"
    return None


def _builtin_link(name: object) -> Link | None:
    """A link of the built-in profile resource (links are not part of data models)."""
    links = catalog_for("").get("profile").links
    return links.get(name) if isinstance(name, str) else None


def _check_aggregate(column: Mapping[str, Any], where: str) -> str | None:
    if set(column) - {"name", "aggregate", "link", "field", "filter"}:
        return f"{where} must be {{name, aggregate, link, field?, filter?}}"
    aggregate = column.get("aggregate")
    if aggregate not in AGGREGATES:
        return f"{where}.aggregate must be one of {', '.join(AGGREGATES)}"
    link = _builtin_link(column.get("link"))
    if link is None:
        known = ", ".join(sorted(catalog_for("").get("profile").links))
        return f"{where}.link: unknown link {_show(column.get('link'))} (known: {known})"
    if aggregate != "count" or "field" in column:
        field_name = column.get("field")
        field = link.fields.get(field_name) if isinstance(field_name, str) else None
        if field is None:
            known = ", ".join(sorted(link.fields))
            return f"{where}.field: {aggregate} needs a field of '{link.name}' ({known})"
        if aggregate == "sum" and field.kind not in ("integer", "number"):
            return f"{where}.field: cannot sum {field.kind} field '{field.name}'"
    if "filter" in column:
        try:
            sqlfilter.check_filter(column["filter"], _link_resource(link), where=f"{where}.filter")
        except FilterError as exc:
            return exc.message
    return None


def _check_column(index: int, column: Any) -> str | None:
    where = f"columns[{index}]"
    if not isinstance(column, Mapping):
        return f"{where} must be {{name, field}} or {{name, aggregate, link, field?, filter?}}"
    name = column.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or name.lower() == "id":
        return f"{where}.name must be an identifier (letters, digits, '_', at most 63), not 'id'"
    if "aggregate" in column:
        return _check_aggregate(column, where)
    if set(column) != {"name", "field"}:
        return f"{where} must be {{name, field}} or {{name, aggregate, link, field?, filter?}}"
    return _check_field_name(column["field"], f"{where}.field")


def _check_columns(value: Any) -> str | None:
    if not isinstance(value, list) or not value or len(value) > MAX_COLUMNS:
        return f"must be a list of 1 to {MAX_COLUMNS} columns"
    seen: set[str] = set()
    for index, column in enumerate(value):
        problem = _check_column(index, column)
        if problem:
            return problem
        # SQLite folds column names' case: `Tier` and `tier` would be one column there.
        if column["name"].lower() in seen:
            return f"column name '{column['name']}' is used twice"
        seen.add(column["name"].lower())
    return None


def _check_audience(value: Any) -> str | None:
    if expressions.find_placeholders(value):
        return None  # known at run time
    if not _AUDIENCE_NAME.fullmatch(value):
        return "an audience name is letters, digits, '_', '.', '-' (at most 64)"
    return None


def _check_mode(value: Any) -> str | None:
    return None if value in ("replace", "append") else "must be 'replace' or 'append'"


def _check_activity_name(value: Any) -> str | None:
    return None if _ACTIVITY_NAME.fullmatch(value) else "must name an inbound activity"


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return "nothing" if value is None else type(value).__name__


# -- run-time helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """An inbound population, checked: its working table, resource and extra columns."""

    producer: str
    table: FromClause
    resource: Resource
    count: int
    columns: tuple[str, ...]

    @property
    def id(self) -> ColumnElement[Any]:
        return self.table.c.id

    def carried(self, skip: frozenset[str] = frozenset()) -> list[ColumnElement[Any]]:
        return [self.table.c[name] for name in self.columns if name.lower() not in skip]


def _resource(ctx: Context, name: str) -> Resource:
    try:
        return catalog_for(ctx.settings.data_model).get(name)
    except FilterError as exc:
        raise ActivityError(exc.message) from None


def _sources(ctx: Context, inputs: Mapping[str, Mapping[str, Any]]) -> list[_Source]:
    """The inbound populations, each a registered working table of this organization."""
    if not inputs:
        raise ActivityError("no inbound population: connect an activity that produces one")
    for producer, descriptor in inputs.items():
        if descriptor.get("kind") != "population":
            raise ActivityError(
                f"'{producer}' carries a {descriptor.get('kind')}, not a population"
            )
    names = [str(descriptor.get("table")) for descriptor in inputs.values()]
    registered = {
        row.name: row
        for row in ctx.session.execute(
            select(working_table.c.name, working_table.c.org_id, working_table.c.resource).where(
                working_table.c.name.in_(names)
            )
        )
    }
    found = []
    for index, (producer, descriptor) in enumerate(sorted(inputs.items())):
        row = registered.get(str(descriptor.get("table")))
        if row is None or row.org_id != ctx.org_id:
            raise ActivityError(
                f"the population from '{producer}' is not a working table of this organization"
            )
        found.append(
            _Source(
                producer,
                populations.as_table(descriptor).alias(f"in{index}"),
                _resource(ctx, row.resource),
                int(descriptor.get("count", 0)),
                tuple(descriptor.get("columns", ())),
            )
        )
    return found


def _single_source(ctx: Context) -> _Source:
    descriptor = ctx.input("population")
    producer = next(name for name, value in ctx.inputs.items() if value is descriptor)
    return _sources(ctx, {producer: descriptor})[0]


def _same_resource(sources: Sequence[_Source]) -> Resource:
    names = sorted({source.resource.name for source in sources})
    if len(names) > 1:
        raise ActivityError(f"the populations hold different resources ({', '.join(names)})")
    return sources[0].resource


def _field(resource: Resource, name: str, where: str) -> Field:
    found = resource.fields.get(name)
    if found is None:
        raise ActivityError(f"{where}: unknown field {_show(name)} of resource '{resource.name}'")
    return found


def _link_resource(link: Link) -> Resource:
    """A link's rows seen as a resource, so its filters compile with the DSL compiler."""
    table = next(iter(link.fields.values())).column.table
    return Resource(link.name, table, link.fields)


def _compile(ctx: Context, node: object, resource: Resource, where: str) -> ColumnElement[bool]:
    try:
        return sqlfilter.compile_filter(
            node, resource, vars=ctx.vars, counts=ctx.counts, today=ctx.now.date(), where=where
        )
    except FilterError as exc:
        raise ActivityError(exc.message) from None


def _with_fields(source: _Source, resource: Resource, org_id: int) -> FromClause:
    """The population joined to its resource rows; records no longer there keep NULLs."""
    on = and_(resource.key == source.id, resource.org == org_id)
    return source.table.outerjoin(resource.table, on)


def _fires(ctx: Context, outlet: str) -> bool:
    """Only outlets with a transition fire: the engine pauses on a fired outlet with none."""
    return bool(ctx.activity.transitions.get(outlet))


def _ordering(
    order: Mapping[str, Any] | None, resource: Resource, tiebreak: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """ORDER BY for `{field, direction}` (NULLs last either way), ties broken by id."""
    if not order:
        return [tiebreak.asc()]
    column = _field(resource, order["field"], "order.field").column
    ordered = column.desc() if order.get("direction") == "desc" else column.asc()
    return [ordered.nulls_last(), tiebreak.asc()]


def shuffle_key(ids: ColumnElement[Any], task_id: str) -> ColumnElement[int]:
    """A pseudo-random sort key per id, the same every time for one task id."""
    seed = int(hashlib.sha256(task_id.encode()).hexdigest()[:7], 16)
    first = (cast(ids, BigInteger) % _PRIME_1 * _MULTIPLIER + seed) % _PRIME_1
    return (first * first + _OFFSET) % _PRIME_2


# -- set operations ----------------------------------------------------------------------------


class _Targeting(ActivityType):
    family = "targeting"
    data = True


@register
class Union(_Targeting):
    """Every record of any inbound population (waits for all branches)."""

    name = "union"
    joins = True

    def run(self, ctx: Context) -> Outcome:
        sources = _sources(ctx, ctx.inputs)
        resource = _same_resource(sources)
        parts = [select(source.id.label("id")) for source in sources]
        merged = (union(*parts) if len(parts) > 1 else parts[0]).subquery("merged")
        out = populations.create(ctx, resource.name, select(merged.c.id), 0)
        ctx.log(f"{out['count']:,} record(s) in the union of {len(sources)} population(s)")
        return Outcome(outputs={"done": out}, counts={ctx.activity.name: out["count"]})


@register
class Intersection(_Targeting):
    """The records present in every inbound population (waits for all branches)."""

    name = "intersection"
    joins = True

    def run(self, ctx: Context) -> Outcome:
        sources = sorted(_sources(ctx, ctx.inputs), key=lambda source: source.count)
        resource = _same_resource(sources)
        # Drive from the smallest population: each other one is a semi-join probe.
        smallest, others = sources[0], sources[1:]
        query = select(smallest.id).where(
            *(select(literal(1)).where(other.id == smallest.id).exists() for other in others)
        )
        out = populations.create(ctx, resource.name, query, 0)
        ctx.log(f"{out['count']:,} record(s) in all {len(sources)} population(s)")
        return Outcome(outputs={"done": out}, counts={ctx.activity.name: out["count"]})


@register
class Exclusion(_Targeting):
    """The `main` population minus the records of the others, by id or by a `key` field."""

    name = "exclusion"
    joins = True
    options = {
        "main": Option((str,), required=True, check=_check_activity_name),
        "key": Option((str,), check=lambda value: _check_field_name(value, "key")),
    }

    def run(self, ctx: Context) -> Outcome:
        main_name = ctx.activity.options["main"]
        if main_name not in ctx.inputs:
            inbound = ", ".join(sorted(ctx.inputs)) or "none"
            raise ActivityError(
                f"main population '{main_name}' is not among the inputs (inbound: {inbound})"
            )
        sources = _sources(ctx, ctx.inputs)
        resource = _same_resource(sources)
        main = next(source for source in sources if source.producer == main_name)
        others = [source for source in sources if source is not main]
        key = ctx.activity.options.get("key")
        if key is None:
            query = select(main.id, *main.carried()).where(
                *(~select(literal(1)).where(other.id == main.id).exists() for other in others)
            )
        else:
            query = self._by_key(ctx, main, others, resource, key)
        out = populations.create(ctx, resource.name, query, 0)
        removed = main.count - out["count"]
        ctx.log(f"{out['count']:,} record(s) kept, {removed:,} excluded")
        return Outcome(outputs={"done": out}, counts={ctx.activity.name: out["count"]})

    @staticmethod
    def _by_key(
        ctx: Context, main: _Source, others: list[_Source], resource: Resource, key: str
    ) -> Select[Any]:
        """Main records whose `key` value no excluded record has (NULL keys never match)."""
        column = str(_field(resource, key, "key").column.key)
        kept = resource.table.alias("kept")
        query = select(main.id, *main.carried()).select_from(
            main.table.outerjoin(kept, and_(kept.c.id == main.id, kept.c.org_id == ctx.org_id))
        )
        for index, other in enumerate(others):
            seen = resource.table.alias(f"excluded{index}")
            probe = (
                select(literal(1))
                .select_from(other.table.join(seen, seen.c.id == other.id))
                .where(seen.c.org_id == ctx.org_id, seen.c[column] == kept.c[column])
            )
            query = query.where(~probe.exists())
        return query


# -- segmentation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    name: str
    #: Most records it takes (percent of the input and count, whichever is lower).
    limit: int | None
    condition: ColumnElement[bool] | None


@register
class Segmentation(_Targeting):
    """Splits a population into disjoint segments, taken in order, each an outlet.

    Each segment takes, from what the earlier ones left and in the chosen order (`order`
    {field, direction}, NULLs last; or `random: true`, seeded by the task id so a rerun
    draws the same; else id ascending), the records matching its `filter` if any, at most
    `percent` of the input (rounded down) and `count`. `remainder: true` adds an outlet
    with the rest. Only outlets with a transition fire; every outlet is counted.
    """

    name = "segmentation"
    deciding = True
    options = {
        "segments": Option((list,), required=True, check=_check_segments),
        "order": Option((dict,), check=_check_order),
        "random": Option((bool,)),
        "remainder": Option((bool,)),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        if activity.options.get("order") and activity.options.get("random"):
            raise DefinitionError(
                "give either 'order' or 'random: true', not both", activity=activity.name
            )

    def outlets(self, activity: Activity) -> frozenset[str]:
        names = {segment["name"] for segment in activity.options.get("segments", [])}
        if activity.options.get("remainder"):
            names.add(REMAINDER)
        return frozenset(names)

    def run(self, ctx: Context) -> Outcome:
        source = _single_source(ctx)
        resource = source.resource
        options = ctx.activity.options
        segments = [
            _Segment(
                spec["name"],
                _limit(spec, source.count),
                _compile(ctx, spec["filter"], resource, f"segments[{index}].filter")
                if "filter" in spec
                else None,
            )
            for index, spec in enumerate(options["segments"])
        ]
        if options.get("random"):
            order = [shuffle_key(source.id, ctx.task_id), source.id.asc()]
        else:
            order = _ordering(options.get("order"), resource, source.id)
        names = [segment.name for segment in segments]
        if options.get("remainder"):
            names.append(REMAINDER)
        fired = [name for name in names if _fires(ctx, name)]
        filtered = any(segment.condition is not None for segment in segments)
        base = source.table
        if filtered or options.get("order"):
            base = _with_fields(source, resource, ctx.org_id)
        ctx.log(f"{source.count:,} record(s) to segment")
        if not filtered and len(fired) <= DIRECT_OUTPUTS_MAX:
            sizes, outputs = self._by_ranges(ctx, source, base, order, segments, fired)
        else:
            sizes, outputs = self._by_assignment(ctx, source, base, order, segments, fired)
        counts: dict[str, Any] = {ctx.activity.name: source.count}
        for name, size in sizes.items():
            counts[f"{ctx.activity.name}_{name}"] = size
            where = "in the remainder" if name == REMAINDER else f"in segment '{name}'"
            ctx.log(f"{size:,} record(s) {where}")
        return Outcome(outlets=tuple(fired), outputs=outputs, counts=counts)

    @staticmethod
    def _by_ranges(
        ctx: Context,
        source: _Source,
        base: FromClause,
        order: list[ColumnElement[Any]],
        segments: list[_Segment],
        fired: list[str],
    ) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        """Segments without filters are consecutive ranges of the ordered input."""
        rows = select(source.id, *source.carried()).select_from(base).order_by(*order)
        sizes: dict[str, int] = {}
        outputs: dict[str, dict[str, Any]] = {}
        start = 0
        for index, segment in enumerate(segments):
            assert segment.limit is not None  # a segment without a filter has one
            size = min(segment.limit, source.count - start)
            if segment.name in fired:
                query = rows.offset(start).limit(size)
                outputs[segment.name] = populations.create(
                    ctx, source.resource.name, query, index + 1
                )
                ctx.progress(index + 1, len(segments) + 1, unit="segments")
            sizes[segment.name] = size
            start += size
        sizes[REMAINDER] = source.count - start
        if REMAINDER in fired:
            query = rows.offset(start)
            outputs[REMAINDER] = populations.create(
                ctx, source.resource.name, query, len(segments) + 1
            )
        return sizes, outputs

    @staticmethod
    def _by_assignment(
        ctx: Context,
        source: _Source,
        base: FromClause,
        order: list[ColumnElement[Any]],
        segments: list[_Segment],
        fired: list[str],
    ) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        """Number the input once, give each record its segment, then read each one out.

        One nested statement: each level sees the previous levels' choices (`_seg`) and
        takes, in order, the free records matching its filter up to its limit (a running
        count over the numbering). Segment i's records get `_seg = i`, the rest NULL.
        """
        resource = source.resource
        flags = [
            case((and_(resource.key.is_not(None), segment.condition), 1), else_=0).label(f"_f{i}")
            for i, segment in enumerate(segments)
            if segment.condition is not None
        ]
        level = (
            select(
                source.id,
                *source.carried(),
                func.row_number().over(order_by=order).label("_rn"),
                cast(null(), Integer).label("_seg"),
                *flags,
            )
            .select_from(base)
            .subquery("level0")
        )
        for index, segment in enumerate(segments):
            take: ColumnElement[bool] = level.c._seg.is_(None)
            if segment.condition is not None:
                take = and_(take, level.c[f"_f{index}"] == 1)
            if segment.limit is not None:
                taken = func.sum(case((take, 1), else_=0)).over(
                    order_by=level.c._rn, rows=(None, 0)
                )
                take = and_(take, taken <= segment.limit)
            chosen = case((take, literal(index, Integer)), else_=level.c._seg).label("_seg")
            kept = [column for column in level.c if column.key != "_seg"]
            level = select(*kept, chosen).subquery(f"level{index + 1}")
        carried = [level.c[name] for name in source.columns]
        assigned = populations.create(
            ctx, resource.name, select(level.c.id, level.c._seg, *carried), 0
        )
        table = populations.as_table(assigned)
        found: dict[int | None, int] = {
            row[0]: row[1]
            for row in ctx.session.execute(
                select(table.c._seg, func.count()).group_by(table.c._seg)
            )
        }
        sizes = {segment.name: int(found.get(i, 0)) for i, segment in enumerate(segments)}
        sizes[REMAINDER] = int(found.get(None, 0))
        outputs: dict[str, dict[str, Any]] = {}
        rows = select(table.c.id, *(table.c[name] for name in source.columns))
        for index, name in enumerate([*(segment.name for segment in segments), REMAINDER]):
            if name not in fired:
                continue
            where = table.c._seg == index if index < len(segments) else table.c._seg.is_(None)
            outputs[name] = populations.create(ctx, resource.name, rows.where(where), index + 1)
            ctx.progress(index + 1, len(segments) + 1, unit="segments")
        return sizes, outputs


def _limit(spec: Mapping[str, Any], total: int) -> int | None:
    """Percent of `total` rounded down and count, whichever is lower; None: no limit."""
    limits = []
    if "percent" in spec:
        # Decimal, so 10 percent of 30 is 3 and not 2.9999...
        limits.append(int(Decimal(str(spec["percent"])) * total // 100))
    if "count" in spec:
        limits.append(int(spec["count"]))
    return min(limits) if limits else None


# -- deduplication and enrichment ----------------------------------------------------------


@register
class Deduplication(_Targeting):
    """Keeps one record per value of `fields`; records with a NULL key are never duplicates.

    The kept record of a group is the first by `keep` {field, direction} (NULLs last), ties
    and default by lowest id. Values compare exactly (`A@x.org` and `a@x.org` differ).
    `done` carries the kept records, `duplicates` (fired only with a transition) the rest.
    """

    name = "deduplication"
    deciding = True
    options = {
        "fields": Option((list,), required=True, check=_check_key_fields),
        "keep": Option((dict,), check=_check_order),
    }

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"done", "duplicates"})

    def run(self, ctx: Context) -> Outcome:
        source = _single_source(ctx)
        resource = source.resource
        keys = [
            _field(resource, name, f"fields[{index}]").column
            for index, name in enumerate(ctx.activity.options["fields"])
        ]
        order = _ordering(ctx.activity.options.get("keep"), resource, source.id)
        rank = func.row_number().over(partition_by=keys, order_by=order)
        kept = or_(rank == 1, *(key.is_(None) for key in keys))
        ranked = (
            select(source.id, *source.carried(), case((kept, 1), else_=0).label("_kept"))
            .select_from(_with_fields(source, resource, ctx.org_id))
            .subquery("ranked")
        )
        rows = select(ranked.c.id, *(ranked.c[name] for name in source.columns))
        done = populations.create(ctx, resource.name, rows.where(ranked.c._kept == 1), 0)
        outlets = ["done"]
        outputs = {"done": done}
        removed = source.count - done["count"]
        if _fires(ctx, "duplicates"):
            outputs["duplicates"] = populations.create(
                ctx, resource.name, rows.where(ranked.c._kept == 0), 1
            )
            removed = outputs["duplicates"]["count"]
            outlets.append("duplicates")
        ctx.log(f"{done['count']:,} record(s) kept, {removed:,} duplicate(s) removed")
        counts = {ctx.activity.name: done["count"], f"{ctx.activity.name}_duplicates": removed}
        return Outcome(outlets=tuple(outlets), outputs=outputs, counts=counts)


@register
class Enrichment(_Targeting):
    """Adds columns to a population: copied fields, or aggregates over linked rows.

    `{name, field}` copies a field; `{name, aggregate, link, field?, filter?}` computes
    count/min/max/sum over the linked rows matching `filter` (count is 0, the others NULL,
    when none match). The input's own columns are carried, a new one of the same name
    replacing an old one.
    """

    name = "enrichment"
    options = {"columns": Option((list,), required=True, check=_check_columns)}

    def run(self, ctx: Context) -> Outcome:
        source = _single_source(ctx)
        resource = source.resource
        specs = ctx.activity.options["columns"]
        added = [
            self._column(ctx, resource, spec, f"columns[{index}]").label(spec["name"])
            for index, spec in enumerate(specs)
        ]
        # A new column replaces a carried one of the same name.
        replaced = frozenset(spec["name"].lower() for spec in specs)
        query = select(source.id, *source.carried(replaced), *added).select_from(
            _with_fields(source, resource, ctx.org_id)
        )
        out = populations.create(ctx, resource.name, query, 0)
        ctx.log(f"{out['count']:,} record(s) enriched with {len(added)} column(s)")
        return Outcome(outputs={"done": out}, counts={ctx.activity.name: out["count"]})

    @staticmethod
    def _column(
        ctx: Context, resource: Resource, spec: Mapping[str, Any], where: str
    ) -> ColumnElement[Any]:
        if "aggregate" not in spec:
            return _field(resource, spec["field"], f"{where}.field").column
        link = resource.links.get(spec["link"])
        if link is None:
            raise ActivityError(
                f"{where}.link: resource '{resource.name}' has no link '{spec['link']}'"
            )
        aggregate = spec["aggregate"]
        if aggregate == "count":
            value: ColumnElement[Any] = func.count()
        else:
            value = getattr(func, aggregate)(link.fields[spec["field"]].column)
        conditions = [link.on]
        if "filter" in spec:
            conditions.append(
                _compile(ctx, spec["filter"], _link_resource(link), f"{where}.filter")
            )
        # Correlated to the outer row: one index probe per record on subscription.profile_id.
        linked = select(value).select_from(link.source).where(*conditions)
        return linked.correlate(resource.table).scalar_subquery()


# -- audiences ---------------------------------------------------------------------------------


def _audience_name(ctx: Context) -> str:
    name = expressions.substitute(ctx.activity.options["audience"], ctx.vars)
    if not isinstance(name, str) or not _AUDIENCE_NAME.fullmatch(name):
        raise ActivityError(
            f"invalid audience name {_show(name)}: letters, digits, '_', '.', '-' (at most 64)"
        )
    return name


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _insert_ignoring_duplicates(s: Session) -> Any:
    """INSERT that skips rows hitting a unique key (concurrent saves, members already in)."""
    if s.get_bind().dialect.name == "sqlite":
        return sqlite_insert
    return postgresql_insert


def _locked_audience(ctx: Context, name: str) -> Any:
    return ctx.session.execute(
        select(audience.c.id, audience.c.resource)
        .where(audience.c.org_id == ctx.org_id, audience.c.name == name)
        .with_for_update()
    ).first()


@register
class SaveAudience(_Targeting):
    """Stores the population's records as the members of a named audience.

    Creates the audience of the organization if missing; `mode: replace` (default) sets its
    members, `append` adds the new ones. Only records still in the resource are stored. The
    activity's `label` (an activity key) becomes the audience's label when not empty.
    `done` passes the inbound population on.
    """

    name = "saveAudience"
    options = {
        "audience": Option((str,), required=True, check=_check_audience),
        "mode": Option((str,), check=_check_mode),
    }

    def run(self, ctx: Context) -> Outcome:
        source = _single_source(ctx)
        resource = source.resource
        name = _audience_name(ctx)
        mode = ctx.activity.options.get("mode", "replace")
        # `label` is an activity key, not an option: the activity's label names the audience.
        label = _text(expressions.substitute(ctx.activity.label, ctx.vars))[:MAX_LABEL]
        found = self._audience(ctx, name, resource, label)
        if mode == "append" and found.resource != resource.name:
            raise ActivityError(
                f"audience '{name}' holds {found.resource} records, not {resource.name}"
            )
        if mode == "replace":
            ctx.session.execute(
                delete(audience_member).where(audience_member.c.audienceId == found.id)
            )
        insert = _insert_ignoring_duplicates(ctx.session)
        # The org condition in WHERE, not ON: SQLite parses `ON ... ON CONFLICT` ambiguously.
        members = (
            select(literal(found.id, Integer), resource.key)
            .select_from(source.table.join(resource.table, resource.key == source.id))
            .where(resource.org == ctx.org_id)
        )
        ctx.session.execute(
            insert(audience_member)
            .from_select(["audienceId", "memberId"], members)
            .on_conflict_do_nothing()
        )
        size = ctx.session.execute(
            select(func.count()).where(audience_member.c.audienceId == found.id)
        ).scalar_one()
        changes: dict[str, Any] = {
            "count": size,
            "lastModified": ctx.now,
            "resource": resource.name,
        }
        if label:
            changes["label"] = label
        ctx.session.execute(update(audience).where(audience.c.id == found.id).values(**changes))
        ctx.log(f"{size:,} record(s) in audience '{name}' ({mode})")
        return Outcome(counts={ctx.activity.name: size})

    @staticmethod
    def _audience(ctx: Context, name: str, resource: Resource, label: str) -> Any:
        """The audience row, created if missing, locked until the task commits."""
        found = _locked_audience(ctx, name)
        if found is None:
            insert = _insert_ignoring_duplicates(ctx.session)
            ctx.session.execute(
                insert(audience)
                .values(
                    org_id=ctx.org_id,
                    name=name,
                    label=label,
                    resource=resource.name,
                    count=0,
                    created=ctx.now,
                    lastModified=ctx.now,
                )
                .on_conflict_do_nothing()
            )
            found = _locked_audience(ctx, name)
        return found


@register
class ReadAudience(_Targeting):
    """The members of a saved audience that still exist in its resource."""

    name = "readAudience"
    options = {"audience": Option((str,), required=True, check=_check_audience)}

    def run(self, ctx: Context) -> Outcome:
        name = _audience_name(ctx)
        found = ctx.session.execute(
            select(audience.c.id, audience.c.resource).where(
                audience.c.org_id == ctx.org_id, audience.c.name == name
            )
        ).first()
        if found is None:
            raise ActivityError(f"audience '{name}' not found")
        resource = _resource(ctx, found.resource)
        query = (
            select(resource.key)
            .select_from(
                audience_member.join(resource.table, resource.key == audience_member.c.memberId)
            )
            .where(audience_member.c.audienceId == found.id, resource.org == ctx.org_id)
        )
        out = populations.create(ctx, resource.name, query, 0)
        ctx.log(f"{out['count']:,} record(s) read from audience '{name}'")
        return Outcome(outputs={"done": out}, counts={ctx.activity.name: out["count"]})
