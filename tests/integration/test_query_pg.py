"""The filter compiler and the query activity on real PostgreSQL: the SQLite semantics, unlogged
working tables, and a query over 50,000 generated profiles."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from tests.conftest import Harness
from tests.unit.test_sqlfilter import (
    ANNIVERSARY_CASES,
    BIRTHDAYS,
    BOOLEAN_CASES,
    EVERYONE,
    HOSTILE_VALUE_CASES,
    LINK_CASES,
    RELATIVE_DAYS_CASES,
    STRING_CASES,
    TEMPORAL_CASES,
    TODAY,
    leaf,
    seed,
)
from worker import catalog, filters, populations, resources, schema
from worker.db import make_engine, make_session_factory
from worker.errors import FilterError
from worker.marketing import profile
from worker.models import LogLine, Task, Workflow
from worker.sqlfilter import compile_filter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROFILE = resources.catalog_for("").get("profile")
#: Far from UTC: a timestamptz cast to a date in the session's zone would be a day off.
SESSION_TIME_ZONE = "Pacific/Kiritimati"


class Seeded:
    def __init__(self, engine: Engine, org: int, dates_org: int) -> None:
        self.engine, self.org, self.dates_org = engine, org, dates_org

    def crm_ids(
        self,
        node: Any,
        *,
        org: int | None = None,
        vars: dict[str, Any] | None = None,
        today: dt.date = TODAY,
    ) -> set[str]:
        condition = compile_filter(node, PROFILE, vars=vars or {}, counts={}, today=today)
        table = PROFILE.table
        stmt = select(table.c.crmId).where(PROFILE.org == (org or self.org), condition)
        with self.engine.connect() as connection:
            connection.execute(text(f"SET TIME ZONE '{SESSION_TIME_ZONE}'"))
            return set(connection.scalars(stmt))


@pytest.fixture(scope="module")
def pg(pg_database: str) -> Iterator[Seeded]:
    engine = make_engine(pg_database)
    schema.upgrade(engine)
    with make_session_factory(engine)() as s, s.begin():
        org, dates_org = seed(s)
    yield Seeded(engine, org, dates_org)
    engine.dispose()


# -- the compiler: every case of the SQLite suite ----------------------------------------------

NODE_CASES = [
    *STRING_CASES,
    *HOSTILE_VALUE_CASES,
    *BOOLEAN_CASES,
    *TEMPORAL_CASES,
    *LINK_CASES,
]


@pytest.mark.parametrize(("node", "expected"), NODE_CASES)
def test_operators_match_the_same_rows_as_on_sqlite(
    pg: Seeded, node: dict[str, Any], expected: set[str]
) -> None:
    assert pg.crm_ids(node) == expected


@pytest.mark.parametrize(("field", "days", "expected"), RELATIVE_DAYS_CASES)
def test_relative_days_match_the_same_rows_as_on_sqlite(
    pg: Seeded, field: str, days: list[int], expected: set[str]
) -> None:
    assert pg.crm_ids(leaf(field, "relativeDays", {"days": days})) == expected


@pytest.mark.parametrize(("today", "days", "expected"), ANNIVERSARY_CASES)
def test_anniversaries_match_the_same_rows_as_on_sqlite(
    pg: Seeded, today: dt.date, days: list[int], expected: set[str]
) -> None:
    node = leaf("birthDate", "relativeDays", {"days": days, "anniversary": True})
    assert pg.crm_ids(node, today=today) == expected


def test_anniversaries_agree_with_the_evaluator_every_few_days_over_two_years(
    pg: Seeded,
) -> None:
    day = dt.date(2023, 1, 1)
    while day < dt.date(2025, 1, 1):
        for window in ([0, 7], [-10, -1], [-40, 30]):
            node = leaf("birthDate", "relativeDays", {"days": window, "anniversary": True})
            expected = {
                birthday.isoformat()
                for birthday in BIRTHDAYS
                if filters.evaluate(node, {"vars": {"birthDate": birthday}}, today=day)
            }
            assert pg.crm_ids(node, org=pg.dates_org, today=day) == expected, (day, window)
        day += dt.timedelta(days=5)


def test_string_matches_are_case_sensitive_and_literal(pg: Seeded) -> None:
    assert pg.crm_ids(leaf("email", "contains", "bob")) == set()
    assert pg.crm_ids(leaf("email", "startsWith", "BOB")) == {"bob"}
    assert pg.crm_ids(leaf("email", "endsWith", ".COM")) == {"bob"}
    assert pg.crm_ids(leaf("email", "contains", "%_o")) == {"leap"}
    assert pg.crm_ids(leaf("firstName", "contains", "\\")) == {"slash"}


def test_in_lists_of_ten_thousand_values_and_huge_numbers_work(pg: Seeded) -> None:
    values = [f"X{i}" for i in range(filters.MAX_LIST - 2)] + ["FR", "DE"]

    assert pg.crm_ids(leaf("country", "in", values)) == {"ann", "slash", "leap"}
    assert pg.crm_ids(leaf("country", "notIn", values)) == {"bob", "pct"}
    assert pg.crm_ids(leaf("id", "notIn", list(range(-10_000, 0)))) == EVERYONE
    assert pg.crm_ids(leaf("id", "eq", 10**30)) == set()
    assert pg.crm_ids(leaf("id", "lt", 10**30)) == EVERYONE
    assert pg.crm_ids(leaf("id", "ge", 0.5)) == EVERYONE


def test_substituted_values_stay_bound_parameters(pg: Seeded) -> None:
    vars = {"name": "' OR '1'='1", "country": "FR'); DROP TABLE profile; --"}

    assert pg.crm_ids(leaf("firstName", "eq", "$(vars/name)"), vars=vars) == {"quote"}
    assert pg.crm_ids(leaf("country", "eq", "$(vars/country)"), vars=vars) == set()
    with pytest.raises(FilterError, match="NUL"):
        pg.crm_ids(leaf("country", "eq", "$(vars/nul)"), vars={"nul": "F\x00R"})
    assert len(pg.crm_ids(leaf("id", "notEmpty"))) == len(EVERYONE)  # the table is still there


# -- the query activity ---------------------------------------------------------------------------


def new_org(harness: Harness, countries: dict[str, str | None]) -> str:
    name = f"org_{uuid.uuid4().hex}"
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, name).id
        if countries:
            s.execute(
                profile.insert(),
                [{"org_id": org_id, "crmId": crm, "country": c} for crm, c in countries.items()],
            )
    return name


def query_workflow(workflow_id: str, query: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
            {
                "name": "query1",
                "type": "query",
                **query,
                "transitions": {"result": "end1", "complement": "end2"},
            },
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }


def run(harness: Harness, org: str, query: dict[str, Any]) -> dict[str, Task]:
    workflow_id = f"q{uuid.uuid4().hex[:12]}"
    harness.start(query_workflow(workflow_id, query), org=org)
    harness.stub.drain()
    with harness.sessions() as s:
        rows = s.scalars(
            select(Task)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == workflow_id)
        ).all()
        for row in rows:
            s.expunge(row)
    return {row.activity: row for row in rows}


def members(s: Session, population: dict[str, Any]) -> set[str]:
    chosen = populations.as_table(population)
    joined = chosen.join(profile, profile.c.id == chosen.c.id)
    return set(s.scalars(select(profile.c.crmId).select_from(joined)))


def test_the_query_activity_writes_unlogged_result_and_complement_tables(
    pg_harness: Harness,
) -> None:
    org = new_org(pg_harness, {"a": "FR", "b": "fr", "c": None, "d": "DE", "e": "FR"})
    new_org(pg_harness, {"x": "FR"})  # another organization's FR profile

    tasks = run(pg_harness, org, {"filter": {"field": "country", "op": "eq", "value": "FR"}})

    assert tasks["query1"].state == "done"
    assert tasks["query1"].counts == {"query1": 2, "query1_complement": 3}
    result, rest = tasks["end1"].inputs["query1"], tasks["end2"].inputs["query1"]
    with pg_harness.sessions() as s:
        assert members(s, result) == {"a", "e"}
        assert members(s, rest) == {"b", "c", "d"}
        persistence = s.execute(
            text("SELECT relname, relpersistence FROM pg_class WHERE relname IN (:a, :b)"),
            {"a": result["table"], "b": rest["table"]},
        ).all()
    assert sorted(persistence) == sorted([(result["table"], "u"), (rest["table"], "u")])


def test_a_query_over_fifty_thousand_generated_profiles_counts_right(
    pg_harness: Harness,
) -> None:
    # Given 50,000 profiles: every tenth in FR, crmId c<n>
    org = new_org(pg_harness, {})
    with pg_harness.sessions() as s, s.begin():
        s.execute(
            text(
                "INSERT INTO profile (org_id, crm_id, country, birth_date, email_opt_out,"
                " sms_opt_out, push_opt_out, blacklisted, email_blacklisted,"
                " mobile_blacklisted, created, last_modified)"
                " SELECT o.id, 'c' || n, CASE WHEN n % 10 = 0 THEN 'FR' ELSE 'DE' END,"
                " DATE '1970-01-01' + n % 20000, false, false, false, false, false, false,"
                " now(), now()"
                " FROM organization o, generate_series(1, 50000) AS n WHERE o.name = :org"
            ),
            {"org": org},
        )

    # When a query keeps the FR ones whose crmId starts with "c1"
    tasks = run(
        pg_harness,
        org,
        {
            "filter": {
                "all": [
                    {"field": "country", "op": "eq", "value": "FR"},
                    {"field": "crmId", "op": "startsWith", "value": "c1"},
                ]
            }
        },
    )

    # Then n = 10, 100..190, 1000..1990 and 10000..19990 by tens: 1 + 10 + 100 + 1000
    assert tasks["query1"].counts == {"query1": 1111, "query1_complement": 48_889}
    with pg_harness.sessions() as s:
        messages = s.scalars(
            select(LogLine.message)
            .where(LogLine.task_id == tasks["query1"].id)
            .order_by(LogLine.id)
        ).all()
    assert messages == ["1,111 record(s) selected", "48,889 record(s) in the complement"]
