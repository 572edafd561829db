"""The resource catalog: built-in fields, links, and data-model extensions installed in place."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, inspect, select

from worker import resources, schema
from worker.errors import ConfigError, FilterError
from worker.marketing import profile


def test_builtin_profile_fields_are_camel_case_over_snake_case_columns() -> None:
    found = resources.Catalog().get("profile")

    assert found.field("firstName").column.name == "first_name"
    assert found.field("birthDate").kind == "date"
    assert found.field("emailOptOut").kind == "boolean"
    assert found.field("created").kind == "datetime"
    assert "org_id" not in found.fields  # never filterable: the engine scopes by organization
    assert set(found.links["subscriptions"].fields) >= {"service", "channel", "created"}
    assert "id" not in found.writable() and "email" in found.writable()


def test_unknown_resource_and_field_name_the_problem() -> None:
    catalog = resources.Catalog()

    with pytest.raises(FilterError, match="unknown resource 'store'"):
        catalog.get("store")
    with pytest.raises(FilterError, match="unknown field 'shoeSize' of resource 'profile'"):
        catalog.get("profile").field("shoeSize")


def test_extensions_add_profile_columns_and_resources_without_touching_shared_tables(
    tmp_path: Path,
) -> None:
    model = {
        "profile": {"columns": {"loyaltyTier": "string", "points": "integer"}},
        "resources": {"store": {"columns": {"code": "string", "openedOn": "date"}}},
    }
    extended = resources.Catalog(model)

    assert extended.get("profile").field("loyaltyTier").column.name == "loyalty_tier"
    assert extended.get("store").field("openedOn").kind == "date"
    assert "loyaltyTier" not in profile.c  # the module's table is left alone
    assert "loyaltyTier" not in resources.Catalog().get("profile").fields


def test_install_adds_what_is_missing_once_and_keeps_existing_rows(tmp_path: Path) -> None:
    model_file = tmp_path / "model.yaml"
    model_file.write_text(
        "profile:\n  columns: {loyaltyTier: string}\n"
        "resources:\n  store:\n    columns: {code: string}\n"
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    schema.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO organization (name, created_at) VALUES ('o', 0)")
        connection.execute(insert(profile).values(org_id=1, email="kept@example.com"))

    schema.upgrade(engine, str(model_file))
    schema.upgrade(engine, str(model_file))  # twice: nothing left to add, no error

    columns = {c["name"] for c in inspect(engine).get_columns("profile")}
    assert "loyalty_tier" in columns
    assert "x_store" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(select(profile.c.email)).scalar_one() == "kept@example.com"
    engine.dispose()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "unknown key"),
        ("profile:\n  columns: {email: string}\n", "already has"),
        ("profile:\n  columns: {'x; DROP TABLE profile': string}\n", "invalid column name"),
        ("profile:\n  columns: {tier: varchar}\n", "kind must be one of"),
        ("profile:\n  columns: {id: string}\n", "invalid column name"),
        ("resources:\n  profile: {columns: {a: string}}\n", "invalid resource name"),
        ("resources:\n  '../x': {columns: {a: string}}\n", "invalid resource name"),
        ("profile:\n  columns: {aB: string, a_b: string}\n", "invalid column name"),
        ("profile:\n  columns: {aB: string, Ab: string}\n", None),
        ("- a list\n", "must hold an object"),
        ("profile: [\n", "not valid YAML"),
    ],
)
def test_bad_data_models_are_refused_with_a_clear_error(
    tmp_path: Path, text: str, message: str | None
) -> None:
    model_file = tmp_path / "model.yaml"
    model_file.write_text(text)

    if message is None:
        resources.load_data_model(model_file)  # different snake names: accepted
        return
    with pytest.raises(ConfigError, match=message):
        resources.load_data_model(model_file)


def test_a_huge_data_model_is_refused(tmp_path: Path) -> None:
    model_file = tmp_path / "model.yaml"
    columns = ", ".join(f"c{i}: string" for i in range(1000))
    model_file.write_text(f"profile:\n  columns: {{{columns}}}\n")

    with pytest.raises(ConfigError, match="at most 200"):
        resources.load_data_model(model_file)


def test_a_missing_data_model_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        resources.load_data_model(tmp_path / "absent.yaml")
