"""The filter DSL compiled to SQL: every operator against real SQLite rows, and hostile input."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from worker import catalog, filters, resources, schema
from worker.db import make_engine, make_session_factory
from worker.errors import FilterError
from worker.marketing import profile, service, subscription
from worker.resources import Field, Resource
from worker.sqlfilter import MAX_BOUND_VALUES, check_filter, compile_filter

TODAY = dt.date(2024, 6, 15)
UTC = dt.UTC

#: crmId -> profile columns of the main organization.
PROFILES: dict[str, dict[str, Any]] = {
    "ann": {
        "email": "ann@example.com",
        "country": "FR",
        "city": "Paris",
        "firstName": "Ann",
        "birthDate": dt.date(1990, 6, 20),
        "created": dt.datetime(2024, 6, 1, 10, 0, tzinfo=UTC),
        "emailOptOut": False,
    },
    "bob": {
        "email": "BOB@EXAMPLE.COM",
        "country": "fr",
        "city": "",
        "firstName": "Bob",
        "birthDate": dt.date(1985, 12, 31),
        "created": dt.datetime(2024, 6, 1, 23, 30, tzinfo=UTC),
        "emailOptOut": True,
    },
    "leap": {
        "email": "50%_off@shop.com",
        "country": "DE",
        "city": None,
        "firstName": "O'Brien",
        "birthDate": dt.date(2000, 2, 29),
        "created": dt.datetime(2024, 6, 2, 0, 30, tzinfo=UTC),
        "emailOptOut": False,
    },
    "quote": {
        "email": "a_b@x.com",
        "country": None,
        "city": "Lyon",
        "firstName": "' OR '1'='1",
        "birthDate": None,
        "created": dt.datetime(2023, 1, 1, tzinfo=UTC),
        "emailOptOut": False,
    },
    "slash": {
        "email": None,
        "country": "FR",
        "city": "Nice",
        "firstName": "back\\slash",
        "birthDate": dt.date(1970, 6, 15),
        "created": dt.datetime(2024, 6, 15, 12, 0, tzinfo=UTC),
        "emailOptOut": True,
    },
    "pct": {
        "email": "",
        "country": "US",
        "city": "Paris",
        "firstName": "%",
        "birthDate": dt.date(1999, 1, 2),
        "created": dt.datetime(2024, 6, 14, 8, 0, tzinfo=UTC),
        "emailOptOut": False,
    },
}
EVERYONE = set(PROFILES)
#: (crmId, service, subscribed at)
SUBSCRIPTIONS = [
    ("ann", "news", dt.datetime(2024, 6, 10, tzinfo=UTC)),
    ("ann", "promo", dt.datetime(2023, 1, 1, tzinfo=UTC)),
    ("bob", "promo", dt.datetime(2024, 6, 14, tzinfo=UTC)),
    ("slash", "news", dt.datetime(2022, 5, 5, tzinfo=UTC)),
]
#: Birthdays of a third organization, for anniversaries: month ends, leap days, year ends.
BIRTHDAYS = sorted(
    {dt.date(1980, 1, 1) + dt.timedelta(days=7 * n) for n in range(53)}
    | {dt.date(y, m, d) for y, m, d in [(2000, 2, 29), (1999, 2, 28), (1999, 3, 1)]}
    | {dt.date(1990, 12, 31), dt.date(1991, 1, 1), dt.date(1992, 12, 30)}
)


@dataclass
class Seeded:
    engine: Engine
    org: int
    dates_org: int
    resource: Resource

    def crm_ids(
        self,
        node: Any,
        *,
        vars: dict[str, Any] | None = None,
        counts: dict[str, Any] | None = None,
        today: dt.date = TODAY,
    ) -> set[str]:
        condition = compile_filter(
            node, self.resource, vars=vars or {}, counts=counts or {}, today=today
        )
        table = self.resource.table
        stmt = select(table.c.crmId).where(self.resource.org == self.org, condition)
        with self.engine.connect() as connection:
            return set(connection.scalars(stmt))


def seed(s: Session) -> tuple[int, int]:
    """Insert PROFILES, SUBSCRIPTIONS and BIRTHDAYS; returns (main org id, birthdays org id)."""
    org = catalog.ensure_org(s, f"sqlf_{uuid.uuid4().hex}").id
    other = catalog.ensure_org(s, f"sqlf_{uuid.uuid4().hex}").id
    dates_org = catalog.ensure_org(s, f"sqlf_{uuid.uuid4().hex}").id
    ids = {}
    for crm, columns in PROFILES.items():
        ids[crm] = s.execute(
            insert(profile).values(org_id=org, crmId=crm, **columns).returning(profile.c.id)
        ).scalar_one()
    # Another organization: same data, never selected.
    s.execute(insert(profile).values(org_id=other, crmId="other", **PROFILES["ann"]))
    services = {}
    for name, channel in (("news", "email"), ("promo", "sms")):
        services[name] = s.execute(
            insert(service).values(org_id=org, name=name, channel=channel).returning(service.c.id)
        ).scalar_one()
    other_news = s.execute(
        insert(service).values(org_id=other, name="news").returning(service.c.id)
    ).scalar_one()
    for crm, name, created in SUBSCRIPTIONS:
        s.execute(
            insert(subscription).values(
                profileId=ids[crm], serviceId=services[name], created=created
            )
        )
    other_id = s.scalars(select(profile.c.id).where(profile.c.org_id == other)).one()
    s.execute(insert(subscription).values(profileId=other_id, serviceId=other_news))
    s.execute(
        insert(profile),
        [{"org_id": dates_org, "crmId": day.isoformat(), "birthDate": day} for day in BIRTHDAYS],
    )
    return org, dates_org


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    path = tmp_path_factory.mktemp("sqlfilter") / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    with make_session_factory(engine)() as s, s.begin():
        org, dates_org = seed(s)
    yield Seeded(engine, org, dates_org, resources.catalog_for("").get("profile"))
    engine.dispose()


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        node["value"] = value
    return node


def refused(db: Seeded, node: Any, match: str, path: str | None = None, **kw: Any) -> None:
    with pytest.raises(FilterError, match=match) as caught:
        db.crm_ids(node, **kw)
    if path is not None:
        assert caught.value.details["path"] == path
    assert len(caught.value.message) < 300


# -- every operator on every kind ----------------------------------------------------------

STRING_CASES = [
    (leaf("country", "eq", "FR"), {"ann", "slash"}),
    (leaf("country", "ne", "FR"), {"bob", "leap", "quote", "pct"}),
    (leaf("country", "in", ["FR", "DE"]), {"ann", "slash", "leap"}),
    (leaf("country", "notIn", ["FR", "DE"]), {"bob", "pct"}),
    (leaf("country", "in", []), set()),
    (leaf("country", "notIn", []), EVERYONE - {"quote"}),
    (leaf("country", "lt", "FR"), {"leap"}),
    (leaf("country", "le", "FR"), {"leap", "ann", "slash"}),
    (leaf("country", "gt", "FR"), {"bob", "pct"}),
    (leaf("country", "ge", "FR"), {"ann", "slash", "bob", "pct"}),
    (leaf("country", "between", ["DE", "FR"]), {"leap", "ann", "slash"}),
    (leaf("email", "contains", "example"), {"ann"}),
    (leaf("email", "contains", "EXAMPLE"), {"bob"}),
    (leaf("email", "startsWith", "a"), {"ann", "quote"}),
    (leaf("email", "startsWith", "A"), set()),
    (leaf("email", "endsWith", ".com"), {"ann", "leap", "quote"}),
    (leaf("email", "endsWith", "a_b@x.com!"), set()),
    (leaf("email", "startsWith", ""), {"ann", "bob", "leap", "quote", "pct"}),
    (leaf("email", "isEmpty"), {"slash", "pct"}),
    (leaf("email", "notEmpty"), {"ann", "bob", "leap", "quote"}),
    (leaf("city", "isEmpty"), {"bob", "leap"}),
    (leaf("country", "eq", 42), set()),  # a number on a string field compares as its text
]


@pytest.mark.parametrize(("node", "expected"), STRING_CASES)
def test_string_operators_match_the_right_rows(
    db: Seeded, node: dict[str, Any], expected: set[str]
) -> None:
    assert db.crm_ids(node) == expected


def test_string_matches_are_case_sensitive_on_sqlite_too(db: Seeded) -> None:
    assert db.crm_ids(leaf("email", "contains", "bob")) == set()
    assert db.crm_ids(leaf("email", "startsWith", "BOB")) == {"bob"}
    assert db.crm_ids(leaf("email", "endsWith", ".COM")) == {"bob"}
    assert db.crm_ids(leaf("country", "eq", "fr")) == {"bob"}


HOSTILE_VALUE_CASES = [
    (leaf("email", "contains", "%"), {"leap"}),
    (leaf("email", "contains", "_"), {"leap", "quote"}),
    (leaf("email", "startsWith", "50%_"), {"leap"}),
    (leaf("email", "endsWith", "_b@x.com"), {"quote"}),
    (leaf("email", "contains", "%_o"), {"leap"}),
    (leaf("firstName", "eq", "%"), {"pct"}),
    (leaf("firstName", "startsWith", "%"), {"pct"}),
    (leaf("firstName", "eq", "' OR '1'='1"), {"quote"}),
    (leaf("firstName", "contains", "'"), {"leap", "quote"}),
    (leaf("firstName", "eq", "back\\slash"), {"slash"}),
    (leaf("firstName", "contains", "\\"), {"slash"}),
    (leaf("firstName", "eq", "x' OR 1=1 --"), set()),
    (leaf("firstName", "in", ["'; DROP TABLE profile; --", "%"]), {"pct"}),
]


@pytest.mark.parametrize(("node", "expected"), HOSTILE_VALUE_CASES)
def test_hostile_values_match_only_literal_rows(
    db: Seeded, node: dict[str, Any], expected: set[str]
) -> None:
    assert db.crm_ids(node) == expected
    assert len(db.crm_ids({"not": leaf("firstName", "eq", "zzz")})) == len(EVERYONE)


BOOLEAN_CASES = [
    (leaf("emailOptOut", "eq", True), {"bob", "slash"}),
    (leaf("emailOptOut", "eq", "false"), {"ann", "leap", "quote", "pct"}),
    (leaf("emailOptOut", "eq", "TRUE"), {"bob", "slash"}),
    (leaf("emailOptOut", "ne", True), {"ann", "leap", "quote", "pct"}),
    (leaf("emailOptOut", "in", [True]), {"bob", "slash"}),
    (leaf("emailOptOut", "notIn", [True]), {"ann", "leap", "quote", "pct"}),
    (leaf("emailOptOut", "isEmpty"), set()),
    (leaf("emailOptOut", "notEmpty"), EVERYONE),
]


@pytest.mark.parametrize(("node", "expected"), BOOLEAN_CASES)
def test_boolean_operators(db: Seeded, node: dict[str, Any], expected: set[str]) -> None:
    assert db.crm_ids(node) == expected


def test_integer_operators_on_ids_accept_numeric_strings_and_huge_numbers(db: Seeded) -> None:
    with db.engine.connect() as connection:
        ids = dict(connection.execute(select(profile.c.crmId, profile.c.id)).all())

    assert db.crm_ids(leaf("id", "eq", ids["ann"])) == {"ann"}
    assert db.crm_ids(leaf("id", "eq", str(ids["bob"]))) == {"bob"}
    assert db.crm_ids(leaf("id", "in", [ids["ann"], ids["pct"], -1])) == {"ann", "pct"}
    assert db.crm_ids(leaf("id", "notIn", [ids["ann"]])) == EVERYONE - {"ann"}
    assert db.crm_ids(leaf("id", "ne", ids["ann"])) == EVERYONE - {"ann"}
    assert db.crm_ids(leaf("id", "between", [ids["ann"], ids["leap"]])) == {"ann", "bob", "leap"}
    assert db.crm_ids(leaf("id", "lt", ids["ann"] + 0.5)) == {"ann"}
    assert db.crm_ids(leaf("id", "le", ids["bob"])) == {"ann", "bob"}
    assert db.crm_ids(leaf("id", "gt", ids["slash"])) == {"pct"}
    assert db.crm_ids(leaf("id", "ge", ids["slash"])) == {"slash", "pct"}
    assert db.crm_ids(leaf("id", "eq", 10**30)) == set()
    assert db.crm_ids(leaf("id", "lt", 10**30)) == EVERYONE
    assert db.crm_ids(leaf("id", "gt", -(10**30))) == EVERYONE
    assert db.crm_ids(leaf("id", "isEmpty")) == set()
    refused(db, leaf("id", "eq", 10**400), "out of range", "filter.value")


TEMPORAL_CASES = [
    (leaf("birthDate", "eq", "1990-06-20"), {"ann"}),
    (leaf("birthDate", "eq", "1990-06-20T23:00:00+05:00"), {"ann"}),  # its own day
    (leaf("birthDate", "ne", "1990-06-20"), EVERYONE - {"ann"}),
    (leaf("birthDate", "lt", "1980-01-01"), {"slash"}),
    (leaf("birthDate", "ge", "2000-02-29"), {"leap"}),
    (leaf("birthDate", "between", ["1985-01-01", "1999-12-31"]), {"ann", "bob", "pct"}),
    (leaf("birthDate", "in", ["2000-02-29", "1970-06-15"]), {"leap", "slash"}),
    (leaf("birthDate", "notIn", ["2000-02-29"]), EVERYONE - {"leap", "quote"}),
    (leaf("birthDate", "isEmpty"), {"quote"}),
    (leaf("created", "eq", "2024-06-01"), {"ann", "bob"}),  # the UTC calendar day
    (leaf("created", "ge", "2024-06-02"), {"leap", "slash", "pct"}),
    (leaf("created", "lt", "2024-06-02T00:00:00Z"), {"ann", "bob", "quote"}),
    (leaf("created", "eq", "2024-06-01T10:00:00Z"), {"ann"}),
    (leaf("created", "eq", "2024-06-01T12:00:00+02:00"), {"ann"}),
    (leaf("created", "eq", "2024-06-01 10:00:00.000Z"), {"ann"}),
    (leaf("created", "eq", "2024-06-01T10:00:00"), {"ann"}),  # naive is UTC
    (leaf("created", "ne", "2024-06-01"), {"leap", "quote", "slash", "pct"}),
    (leaf("created", "in", ["2024-06-01", "2024-06-15T12:00:00Z"]), {"ann", "bob", "slash"}),
    (leaf("created", "in", ["2024-06-14"]), {"pct"}),
    (leaf("created", "notIn", ["2024-06-01T10:00:00Z"]), EVERYONE - {"ann"}),
    (leaf("created", "between", ["2024-06-01T12:00:00Z", "2024-06-02"]), {"bob", "leap"}),
]


@pytest.mark.parametrize(("node", "expected"), TEMPORAL_CASES)
def test_date_and_datetime_operators(db: Seeded, node: dict[str, Any], expected: set[str]) -> None:
    assert db.crm_ids(node) == expected


RELATIVE_DAYS_CASES = [
    ("created", [-1, 0], {"slash", "pct"}),
    ("created", [0, 0], {"slash"}),
    ("created", [-14, -13], {"ann", "bob", "leap"}),
    ("created", [1, 100], set()),
    (
        "birthDate",
        [-(TODAY - dt.date(1970, 6, 15)).days, -(TODAY - dt.date(1985, 12, 31)).days],
        {"slash", "bob"},
    ),
]


@pytest.mark.parametrize(("field", "days", "expected"), RELATIVE_DAYS_CASES)
def test_relative_days_counts_calendar_days_from_today(
    db: Seeded, field: str, days: list[int], expected: set[str]
) -> None:
    assert db.crm_ids(leaf(field, "relativeDays", {"days": days})) == expected


ANNIVERSARY_CASES = [
    (TODAY, [0, 7], {"slash", "ann"}),
    (TODAY, [1, 4], set()),
    (dt.date(2024, 12, 29), [-3, 4], {"bob", "pct"}),  # across the new year
    (dt.date(2025, 1, 3), [-3, -1], {"bob", "pct"}),
    (dt.date(2023, 2, 25), [0, 3], {"leap"}),  # Feb 29 falls on Feb 28 in 2023
    (dt.date(2024, 2, 25), [0, 3], set()),  # but not in a leap year
    (dt.date(2024, 2, 25), [0, 4], {"leap"}),
    (dt.date(2025, 3, 1), [-1, 0], {"leap"}),
    (dt.date(2024, 3, 1), [0, 0], set()),
    (TODAY, [-366, 366], EVERYONE - {"quote"}),
]


@pytest.mark.parametrize(("today", "days", "expected"), ANNIVERSARY_CASES)
def test_anniversaries_wrap_the_year_and_handle_feb_29(
    db: Seeded, today: dt.date, days: list[int], expected: set[str]
) -> None:
    node = leaf("birthDate", "relativeDays", {"days": days, "anniversary": True})
    assert db.crm_ids(node, today=today) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    today=st.dates(dt.date(2022, 1, 1), dt.date(2029, 12, 31)),
    low=st.integers(-366, 366),
    width=st.integers(0, 40),
    anniversary=st.booleans(),
)
def test_relative_days_agree_with_the_python_evaluator(
    db: Seeded, today: dt.date, low: int, width: int, anniversary: bool
) -> None:
    high = min(low + width, 366)
    node = leaf("birthDate", "relativeDays", {"days": [low, high], "anniversary": anniversary})
    if not anniversary:  # reach the seeded birthdays, decades ago
        node["value"]["days"] = [low - 12_000, high - 12_000]
    expected = {
        day.isoformat()
        for day in BIRTHDAYS
        if filters.evaluate(node, {"vars": {"birthDate": day}}, today=today)
    }
    condition = compile_filter(node, db.resource, vars={}, counts={}, today=today)
    table = db.resource.table
    stmt = select(table.c.crmId).where(table.c.org_id == db.dates_org, condition)
    with db.engine.connect() as connection:
        assert set(connection.scalars(stmt)) == expected


# -- links -----------------------------------------------------------------------------------


LINK_CASES = [
    (leaf("subscriptions.service", "eq", "news"), {"ann", "slash"}),
    (leaf("subscriptions.service", "ne", "news"), {"bob", "leap", "quote", "pct"}),
    (leaf("subscriptions.service", "in", ["promo"]), {"ann", "bob"}),
    (leaf("subscriptions.service", "notIn", ["news", "promo"]), {"leap", "quote", "pct"}),
    (leaf("subscriptions.service", "isEmpty"), {"leap", "quote", "pct"}),
    (leaf("subscriptions.service", "notEmpty"), {"ann", "bob", "slash"}),
    (leaf("subscriptions.service", "startsWith", "pro"), {"ann", "bob"}),
    (leaf("subscriptions.channel", "eq", "sms"), {"ann", "bob"}),
    (leaf("subscriptions.created", "relativeDays", {"days": [-7, 0]}), {"ann", "bob"}),
    (leaf("subscriptions.created", "lt", "2023-06-01"), {"ann", "slash"}),
    (
        {
            "all": [
                leaf("subscriptions.service", "eq", "news"),
                leaf("subscriptions.service", "eq", "promo"),
            ]
        },
        {"ann"},
    ),
]


@pytest.mark.parametrize(("node", "expected"), LINK_CASES)
def test_link_fields_mean_some_linked_row_and_negations_mean_none(
    db: Seeded, node: dict[str, Any], expected: set[str]
) -> None:
    assert db.crm_ids(node) == expected


# -- combinators ------------------------------------------------------------------------------


def test_all_any_and_not_combine_conditions(db: Seeded) -> None:
    node = {
        "any": [
            {"all": [leaf("country", "eq", "FR"), leaf("emailOptOut", "eq", False)]},
            {"not": leaf("email", "contains", "@")},
        ]
    }

    # ann (FR, not opted out); slash has no email and pct an empty one.
    assert db.crm_ids(node) == {"ann", "slash", "pct"}


def test_not_holds_for_missing_values_like_the_evaluator(db: Seeded) -> None:
    assert db.crm_ids({"not": leaf("country", "eq", "FR")}) == EVERYONE - {"ann", "slash"}
    assert db.crm_ids({"not": leaf("birthDate", "lt", "2100-01-01")}) == {"quote"}
    assert db.crm_ids({"not": {"not": leaf("country", "eq", "FR")}}) == {"ann", "slash"}


def test_nesting_up_to_the_maximum_depth_compiles_and_one_more_is_refused(db: Seeded) -> None:
    node: dict[str, Any] = leaf("country", "eq", "FR")
    for level in range(filters.MAX_DEPTH - 1):
        node = {"all": [node]} if level % 2 else {"any": [node, leaf("country", "eq", "??")]}
    assert db.crm_ids(node) == {"ann", "slash"}

    refused(db, {"not": node}, f"deeper than {filters.MAX_DEPTH}")


# -- vars and counts ------------------------------------------------------------------------


def test_placeholders_in_values_are_substituted_as_bound_values(db: Seeded) -> None:
    vars = {"country": "FR", "domain": "x.com", "hostile": "' OR '1'='1", "n": 75}

    assert db.crm_ids(leaf("country", "eq", "$(vars/country)"), vars=vars) == {"ann", "slash"}
    assert db.crm_ids(leaf("email", "endsWith", "@$(vars/domain)"), vars=vars) == {"quote"}
    assert db.crm_ids(leaf("firstName", "eq", "$(vars/hostile)"), vars=vars) == {"quote"}
    assert db.crm_ids(leaf("country", "in", ["$(vars/country)", "DE"]), vars=vars) == {
        "ann",
        "slash",
        "leap",
    }
    assert db.crm_ids(leaf("city", "eq", "$(vars/n)"), vars=vars) == set()


def test_placeholders_without_a_usable_value_are_refused_naming_the_path(db: Seeded) -> None:
    refused(
        db,
        {"all": [leaf("country", "eq", "$(vars/missing)")]},
        "variable 'missing' has no value",
        "filter.all[0].value",
    )
    refused(db, leaf("country", "eq", "$(vars/list)"), "got a list", vars={"list": [1]})
    refused(db, leaf("id", "eq", "$(vars/word)"), "expects a number", vars={"word": "abc"})


def test_vars_and_counts_leaves_are_evaluated_in_python(db: Seeded) -> None:
    gated = {"all": [leaf("vars.go", "eq", True), leaf("country", "eq", "FR")]}
    assert db.crm_ids(gated, vars={"go": True}) == {"ann", "slash"}
    assert db.crm_ids(gated, vars={"go": False}) == set()
    assert db.crm_ids(gated) == set()

    either = {"any": [leaf("counts.query1", "gt", 10), leaf("country", "eq", "DE")]}
    assert db.crm_ids(either, counts={"query1": 5}) == {"leap"}
    assert db.crm_ids(either, counts={"query1": 50}) == EVERYONE
    assert db.crm_ids({"not": leaf("vars.go", "eq", True)}, vars={"go": True}) == set()


# -- hostile and malformed input --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ("shoeSize", "unknown field 'shoeSize' of resource 'profile'"),
        ("emial", "did you mean 'email'"),
        ("org_id", "unknown field 'org_id'"),  # the organization is never filterable
        ("subscriptions", "unknown field 'subscriptions'"),
        ("subscriptions.nope", "unknown field 'subscriptions.nope'"),
        ("email.domain", "unknown field 'email.domain'"),
        ("subscriptions.service.name", "unknown field"),
        ("email; DROP TABLE profile", "invalid field name"),
        ("id) OR (1=1", "invalid field name"),
        ("a" * 10_000, r"unknown field 'a{40}\.\.\.'"),
    ],
)
def test_unknown_and_sql_looking_fields_are_refused(db: Seeded, field: str, match: str) -> None:
    refused(db, {"any": [leaf(field, "eq", "x")]}, match, "filter.any[0].field")


@pytest.mark.parametrize(
    ("node", "match", "path"),
    [
        (leaf("id", "eq", "abc"), "integer field 'id' expects a number, got 'abc'", "filter.value"),
        (leaf("id", "eq", True), "expects a number", "filter.value"),
        (leaf("birthDate", "eq", "not a date"), "expects an ISO-8601 date", "filter.value"),
        (leaf("birthDate", "eq", "2023-02-30"), "expects an ISO-8601 date", "filter.value"),
        (leaf("birthDate", "gt", 5), "expects an ISO-8601 date", "filter.value"),
        (leaf("emailOptOut", "eq", "yes"), "expects true or false", "filter.value"),
        (leaf("emailOptOut", "eq", 1), "expects true or false", "filter.value"),
        (leaf("country", "eq", True), "expects a string", "filter.value"),
        (leaf("country", "in", ["FR", "DE", False]), "expects a string", "filter.value[2]"),
        (leaf("id", "between", [1, "x"]), "expects a number", "filter.value[1]"),
        (leaf("emailOptOut", "startsWith", "t"), "'startsWith' does not apply", "filter.op"),
        (leaf("emailOptOut", "lt", "true"), "'lt' does not apply to boolean", "filter.op"),
        (leaf("birthDate", "contains", "19"), "'contains' does not apply to date", "filter.op"),
        (leaf("id", "endsWith", "1"), "'endsWith' does not apply to integer", "filter.op"),
        (
            leaf("country", "relativeDays", {"days": [0, 1]}),
            "'relativeDays' does not apply to string",
            "filter.op",
        ),
        (leaf("country", "eq", "F\x00R"), "NUL", "filter.value"),
        (leaf("country", "eq", "\ud800"), "not valid text", "filter.value"),
        ({"field": "country", "op": "eq", "value": None}, "null is not a value", "filter.value"),
        (leaf("country", "like", "F%"), "unknown operator", "filter.op"),
        ({"all": []}, "empty list", "filter.all"),
        ("country = 'FR'", "expected a filter object", "filter"),
    ],
)
def test_values_and_operators_that_do_not_fit_the_field_are_refused(
    db: Seeded, node: Any, match: str, path: str
) -> None:
    refused(db, node, match, path)


def test_an_in_list_of_ten_thousand_values_works(db: Seeded) -> None:
    values = [f"X{i}" for i in range(filters.MAX_LIST - 2)] + ["FR", "DE"]

    assert db.crm_ids(leaf("country", "in", values)) == {"ann", "slash", "leap"}
    assert db.crm_ids(leaf("country", "notIn", values)) == {"bob", "pct"}
    linked = leaf("subscriptions.service", "in", [*values[:-2], "news"])
    assert db.crm_ids(linked) == {"ann", "slash"}


def test_longer_lists_and_too_many_values_in_total_are_refused(db: Seeded) -> None:
    refused(
        db, leaf("country", "in", ["x"] * (filters.MAX_LIST + 1)), "longer than", "filter.value"
    )

    lists = {"any": [leaf("country", "in", [f"{n}-{i}" for i in range(10_000)]) for n in range(4)]}
    refused(db, lists, f"more than {MAX_BOUND_VALUES:,} values", "filter.any[3].value")


def test_today_may_be_given_as_a_datetime(db: Seeded) -> None:
    node = leaf("created", "relativeDays", {"days": [0, 0]})
    assert db.crm_ids(node, today=dt.datetime(2024, 6, 15, 23, 0, tzinfo=UTC)) == {"slash"}


# -- save-time check and PostgreSQL rendering ------------------------------------------------


def test_check_filter_checks_fields_and_literal_values_but_leaves_placeholders_to_run_time(
    db: Seeded,
) -> None:
    check_filter(
        {
            "all": [
                leaf("country", "eq", "$(vars/country)"),
                leaf("id", "in", ["$(vars/a)", "$(vars/b)"]),
                leaf("vars.anything", "eq", 1),
                leaf("subscriptions.service", "eq", "news"),
            ]
        },
        db.resource,
    )
    with pytest.raises(FilterError, match="unknown field 'shoeSize'"):
        check_filter(leaf("shoeSize", "eq", "$(vars/x)"), db.resource)
    with pytest.raises(FilterError, match="'startsWith' does not apply"):
        check_filter(leaf("emailOptOut", "startsWith", "$(vars/x)"), db.resource)
    with pytest.raises(FilterError, match="expects a number") as caught:
        check_filter({"not": leaf("id", "eq", "abc")}, db.resource, where="conditions[0]")
    assert caught.value.details["path"] == "conditions[0].not.value"


def test_postgresql_gets_its_own_functions_and_bound_values_only(db: Seeded) -> None:
    node = {
        "all": [
            leaf("email", "contains", "' OR 1=1 --"),
            leaf("created", "eq", "2024-06-01"),
            leaf("birthDate", "relativeDays", {"days": [0, 7], "anniversary": True}),
        ]
    }
    condition = compile_filter(node, db.resource, vars={}, counts={}, today=TODAY)
    stmt = select(db.resource.key).where(condition)
    sql = str(stmt.compile(dialect=postgresql.dialect()))

    assert "strpos(profile.email" in sql
    assert "CAST(timezone('UTC', profile.created) AS DATE)" in sql
    assert "EXTRACT(month FROM profile.birth_date)" in sql
    assert "OR 1=1" not in sql and "2024" not in sql


# -- the compiler agrees with the Python evaluator ------------------------------------------

_things = MetaData()
thing = Table(
    "thing",
    _things,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, nullable=False),
    Column("name", String(16)),
    Column("amount", Integer),
    Column("ratio", Float),
    Column("flag", Boolean),
)
THING = Resource(
    "thing",
    thing,
    {
        name: Field(name, thing.c[name], kind)
        for name, kind in [
            ("name", "string"),
            ("amount", "integer"),
            ("ratio", "number"),
            ("flag", "boolean"),
        ]
    },
)
_TEXT = st.text(alphabet="abAB%_\\' é", max_size=4)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": _TEXT,
    "amount": st.integers(-4, 4),
    "ratio": st.sampled_from([-1.5, 0.0, 0.5, 2.0]),
    "flag": st.booleans(),
}
_ORDERED_OPS = ["eq", "ne", "lt", "le", "gt", "ge", "in", "notIn", "between", "isEmpty", "notEmpty"]
_OPS = {
    "name": [*_ORDERED_OPS, "contains", "startsWith", "endsWith"],
    "amount": _ORDERED_OPS,
    "ratio": _ORDERED_OPS,
    "flag": ["eq", "ne", "in", "notIn", "isEmpty", "notEmpty"],
}


@st.composite
def _leaves(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(_OPS)))
    op = draw(st.sampled_from(_OPS[field]))
    values = _VALUES[field]
    if op in ("isEmpty", "notEmpty"):
        return {"field": field, "op": op}
    if op in ("in", "notIn"):
        return {"field": field, "op": op, "value": draw(st.lists(values, max_size=3))}
    if op == "between":
        return {"field": field, "op": op, "value": sorted([draw(values), draw(values)])}
    return {"field": field, "op": op, "value": draw(values)}


_FILTERS = st.recursive(
    _leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda nodes: {"all": nodes}),
        st.lists(children, min_size=1, max_size=3).map(lambda nodes: {"any": nodes}),
        children.map(lambda node: {"not": node}),
    ),
    max_leaves=8,
)
_ROWS = st.lists(
    st.fixed_dictionaries({name: st.none() | values for name, values in _VALUES.items()}),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def things(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('things') / 'things.sqlite'}")
    _things.create_all(engine)
    yield engine
    engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=_FILTERS, rows=_ROWS)
def test_sql_and_the_python_evaluator_agree_on_random_rows_and_filters(
    things: Engine, node: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    expected = {i for i, row in enumerate(rows) if filters.evaluate(node, {"vars": row})}
    condition = compile_filter(node, THING, vars={}, counts={}, today=TODAY)
    with things.begin() as connection:
        connection.execute(delete(thing))
        connection.execute(insert(thing), [{"id": i, "org_id": 1, **r} for i, r in enumerate(rows)])
        found = set(connection.scalars(select(thing.c.id).where(thing.c.org_id == 1, condition)))
    assert found == expected, node


def test_extension_fields_compile_with_their_kind() -> None:
    extended = resources.Catalog({"profile": {"columns": {"points": "integer"}}}).get("profile")

    condition = compile_filter(
        leaf("points", "ge", "10"), extended, vars={}, counts={}, today=TODAY
    )
    assert "points" in str(condition)
    with pytest.raises(FilterError, match="integer field 'points' expects a number"):
        compile_filter(leaf("points", "ge", "ten"), extended, vars={}, counts={}, today=TODAY)
