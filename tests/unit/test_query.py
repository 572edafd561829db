"""The query activity in workflows on SQLite: result and complement populations, limits, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.conftest import Harness
from worker import catalog, definitions, populations, resources
from worker.config import Settings
from worker.errors import DefinitionError, FilterError
from worker.marketing import profile, service, working_table
from worker.models import LogLine, Task, Workflow

#: crmId -> country, in id order, of the organization the workflows run in.
ACME = {
    "fr1": "FR",
    "fr2": "FR",
    "de1": "DE",
    "fr3": "FR",
    "de2": "DE",
    "none1": None,
    "lower": "fr",
}
RIVAL = {"rival1": "FR", "rival2": "DE"}


def seed(harness: Harness, rows: dict[str, str | None] = ACME, org: str = "acme") -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        s.execute(
            insert(profile),
            [{"org_id": org_id, "crmId": crm, "country": country} for crm, country in rows.items()],
        )


@pytest.fixture(autouse=True)
def _no_data_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Definitions are checked against CARILLON_DATA_MODEL when saved: start without one."""
    monkeypatch.delenv("CARILLON_DATA_MODEL", raising=False)


@pytest.fixture
def seeded(harness: Harness) -> Harness:
    seed(harness)
    seed(harness, RIVAL, org="rival")
    return harness


def workflow(
    options: dict[str, Any], transitions: dict[str, str] | None = None, signal: bool = False
) -> dict[str, Any]:
    transitions = {"result": "end1"} if transitions is None else transitions
    first: dict[str, Any] = {"name": "start1", "type": "start", "transitions": {"done": "query1"}}
    if signal:
        first = {
            "name": "signal1",
            "type": "externalSignal",
            "parameters": {"country": "string"},
            "transitions": {"done": "query1"},
        }
    ends = [{"name": name, "type": "end"} for name in sorted(set(transitions.values()))]
    return {
        "id": "q",
        "activities": [
            first,
            {"name": "query1", "type": "query", **options, "transitions": transitions},
            *ends,
        ],
    }


def task(harness: Harness, activity: str) -> Task:
    with harness.sessions() as s:
        found = s.scalars(select(Task).where(Task.activity == activity)).all()
        assert len(found) == 1, found
        s.expunge(found[0])
        return found[0]


def members(harness: Harness, population: dict[str, Any]) -> set[str]:
    chosen = populations.as_table(population)
    stmt = select(profile.c.crmId).select_from(chosen.join(profile, profile.c.id == chosen.c.id))
    return {row.crmId for row in harness.query(stmt)}


def logs(harness: Harness, activity: str) -> list[str]:
    return [
        row.message
        for row in harness.query(
            select(LogLine.message).where(LogLine.activity == activity).order_by(LogLine.id)
        )
    ]


def state(harness: Harness) -> Workflow:
    with harness.sessions() as s:
        found = s.scalars(select(Workflow).where(Workflow.name == "q")).one()
        s.expunge(found)
        return found


# -- result and complement -------------------------------------------------------------------


def test_result_and_complement_split_the_organizations_profiles(seeded: Harness) -> None:
    seeded.start(
        workflow(
            {"filter": {"field": "country", "op": "eq", "value": "FR"}},
            {"result": "end1", "complement": "end2"},
        )
    )
    seeded.stub.drain()

    query = task(seeded, "query1")
    assert query.state == "done" and query.outlets == ["result", "complement"]
    assert query.counts == {"query1": 3, "query1_complement": 4}
    result = task(seeded, "end1").inputs["query1"]
    rest = task(seeded, "end2").inputs["query1"]
    assert result["kind"] == "population" and result["resource"] == "profile"
    assert (result["count"], rest["count"]) == (3, 4)
    assert members(seeded, result) == {"fr1", "fr2", "fr3"}
    # NULL countries and another case are in the complement; the rival org is nowhere.
    assert members(seeded, rest) == {"de1", "de2", "none1", "lower"}
    assert logs(seeded, "query1") == ["3 record(s) selected", "4 record(s) in the complement"]
    assert state(seeded).state == "finished"
    registered = seeded.query(select(working_table.c.name, working_table.c.count))
    assert sorted(tuple(row) for row in registered) == sorted(
        [(result["table"], 3), (rest["table"], 4)]
    )


def test_another_organizations_profiles_are_never_selected(seeded: Harness) -> None:
    seeded.start(
        workflow(
            {"filter": {"field": "country", "op": "notEmpty"}},
            {"result": "end1", "complement": "end2"},
        )
    )
    seeded.stub.drain()

    everyone = members(seeded, task(seeded, "end1").inputs["query1"])
    everyone |= members(seeded, task(seeded, "end2").inputs["query1"])
    assert everyone == set(ACME)


def test_without_a_complement_transition_no_complement_is_built(seeded: Harness) -> None:
    seeded.start(workflow({"filter": {"field": "country", "op": "eq", "value": "DE"}}))
    seeded.stub.drain()

    query = task(seeded, "query1")
    assert query.outlets == ["result"] and query.counts == {"query1": 2}
    assert seeded.query(select(func.count()).select_from(working_table))[0][0] == 1
    assert state(seeded).state == "finished"


def test_complement_true_counts_the_complement_without_firing_it(seeded: Harness) -> None:
    seeded.start(
        workflow({"filter": {"field": "country", "op": "eq", "value": "DE"}, "complement": True})
    )
    seeded.stub.drain()

    query = task(seeded, "query1")
    assert query.outlets == ["result"]
    assert query.counts == {"query1": 2, "query1_complement": 5}
    assert task(seeded, "end1").counts["query1_complement"] == 5  # usable by a later test
    assert state(seeded).state == "finished"


def test_limit_keeps_the_lowest_ids_and_the_rest_goes_to_the_complement(seeded: Harness) -> None:
    seeded.start(
        workflow(
            {"filter": {"field": "country", "op": "in", "value": ["FR", "DE"]}, "limit": 2},
            {"result": "end1", "complement": "end2"},
        )
    )
    seeded.stub.drain()

    assert members(seeded, task(seeded, "end1").inputs["query1"]) == {"fr1", "fr2"}
    assert members(seeded, task(seeded, "end2").inputs["query1"]) == set(ACME) - {"fr1", "fr2"}


def test_another_resource_can_be_queried(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        s.execute(
            insert(service),
            [
                {"org_id": org_id, "name": "news", "channel": "email"},
                {"org_id": org_id, "name": "alerts", "channel": "sms"},
            ],
        )
    harness.start(
        workflow(
            {"resource": "service", "filter": {"field": "channel", "op": "eq", "value": "sms"}}
        )
    )
    harness.stub.drain()

    result = task(harness, "end1").inputs["query1"]
    assert result["resource"] == "service" and result["count"] == 1


def test_counts_are_logged_with_thousands_separators(harness: Harness) -> None:
    seed(harness, {f"it{i}": "IT" for i in range(1234)})
    harness.start(workflow({"filter": {"field": "country", "op": "eq", "value": "IT"}}))
    harness.stub.drain()

    assert logs(harness, "query1") == ["1,234 record(s) selected"]


# -- vars --------------------------------------------------------------------------------------


def test_the_filter_reads_the_jobs_vars(seeded: Harness) -> None:
    seeded.start(
        workflow(
            {"filter": {"field": "country", "op": "eq", "value": "$(vars/country)"}}, signal=True
        )
    )
    seeded.engine.trigger(None, "q", "signal1", "test", {"country": "DE"})
    seeded.stub.drain()

    assert members(seeded, task(seeded, "end1").inputs["query1"]) == {"de1", "de2"}


def test_a_missing_variable_fails_the_task_and_writes_nothing(seeded: Harness) -> None:
    seeded.start(
        workflow(
            {"filter": {"field": "country", "op": "eq", "value": "$(vars/country)"}}, signal=True
        )
    )
    seeded.engine.trigger(None, "q", "signal1", "test", {})
    seeded.stub.drain()

    query = task(seeded, "query1")
    assert query.state == "failed"
    assert "variable 'country' has no value" in (query.error or "")
    assert state(seeded).state == "error"
    assert seeded.query(select(func.count()).select_from(working_table))[0][0] == 0


# -- save-time errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "transitions", "match"),
    [
        ({"filtre": {}}, None, "unknown option 'filtre' for type 'query'"),
        ({}, None, "option 'filter' is required"),
        ({"filter": "country = 'FR'"}, None, "option 'filter' must be dict"),
        ({"filter": {"field": "shoeSize", "op": "eq", "value": 1}}, None, "unknown field"),
        (
            {"filter": {"any": [{"field": "country", "op": "like", "value": "F%"}]}},
            None,
            r"filter\.any\[0\]\.op: unknown operator 'like'",
        ),
        ({"filter": {"field": "id", "op": "eq", "value": "abc"}}, None, "expects a number"),
        (
            {"filter": {"field": "email; DROP TABLE profile", "op": "isEmpty"}},
            None,
            "invalid field name",
        ),
        (
            {"resource": "store", "filter": {"field": "code", "op": "eq", "value": "x"}},
            None,
            "option 'resource': unknown resource 'store'",
        ),
        (
            {"resource": "x y", "filter": {"field": "code", "op": "isEmpty"}},
            None,
            "must be a resource name",
        ),
        ({"filter": {"field": "id", "op": "isEmpty"}, "limit": 0}, None, "between 1 and"),
        ({"filter": {"field": "id", "op": "isEmpty"}, "limit": True}, None, "must be int"),
        (
            {"filter": {"field": "id", "op": "isEmpty"}, "complement": False},
            {"result": "end1", "complement": "end2"},
            "the 'complement' transition never fires",
        ),
        ({"filter": {"field": "id", "op": "isEmpty"}}, {"done": "end1"}, "unknown outlet 'done'"),
    ],
)
def test_bad_options_are_refused_when_saved(
    options: dict[str, Any], transitions: dict[str, str] | None, match: str
) -> None:
    with pytest.raises(DefinitionError, match=match) as caught:
        definitions.parse(workflow(options, transitions))
    assert caught.value.details["activity"] == "query1"


def test_a_refused_definition_is_not_stored(harness: Harness) -> None:
    with pytest.raises(FilterError, match="unknown field 'shoeSize'"):
        harness.save(workflow({"filter": {"field": "shoeSize", "op": "isEmpty"}}))
    assert harness.query(select(func.count()).select_from(Workflow))[0][0] == 0


def test_filter_errors_keep_their_code_and_path() -> None:
    body = workflow({"filter": {"not": {"field": "birthDate", "op": "eq", "value": "soon"}}})
    with pytest.raises(FilterError) as caught:
        definitions.parse(body)
    assert caught.value.details == {"activity": "query1", "path": "filter.not.value"}


def test_placeholders_are_left_to_run_time_when_saved(harness: Harness) -> None:
    filter_ = {"all": [{"field": "id", "op": "eq", "value": "$(vars/id)"}]}
    filter_["all"].append({"field": "vars.go", "op": "eq", "value": True})
    harness.save(workflow({"filter": filter_}))


# -- data-model extensions ---------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(
        "profile:\n  columns: {points: integer}\n"
        "resources:\n  store:\n    columns: {code: string, city: string}\n"
    )
    return path


@pytest.fixture
def extended(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.setenv("CARILLON_DATA_MODEL", str(model_file))
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'extended.sqlite'}",
        broker_url="memory://",
        result_backend="cache+memory://",
        signal_min_interval=0,
        lease_seconds=2,
        republish_seconds=1,
        data_model=str(model_file),
    ).resolved()
    built = Harness(settings)
    yield built
    built.db.dispose()


def test_extension_fields_and_resources_are_known_when_the_data_model_is_set(
    extended: Harness, model_file: Path
) -> None:
    store = resources.catalog_for(str(model_file)).get("store").table
    with extended.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        s.execute(
            insert(store),
            [
                {"org_id": org_id, "code": f"S{i}", "city": "Paris" if i % 2 else "Lyon"}
                for i in range(6)
            ],
        )
    extended.start(
        workflow(
            {"resource": "store", "filter": {"field": "city", "op": "eq", "value": "Paris"}},
            {"result": "end1", "complement": "end2"},
        )
    )
    extended.stub.drain()

    assert task(extended, "query1").counts == {"query1": 3, "query1_complement": 3}
    assert task(extended, "end1").inputs["query1"]["resource"] == "store"


def test_extension_profile_fields_can_be_filtered(extended: Harness, model_file: Path) -> None:
    table = resources.catalog_for(str(model_file)).get("profile").table
    with extended.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        s.execute(insert(table), [{"org_id": org_id, "points": n} for n in (5, 10, 50, None)])
    extended.start(workflow({"filter": {"field": "points", "op": "ge", "value": "10"}}))
    extended.stub.drain()

    assert task(extended, "query1").counts == {"query1": 2}


def test_extension_fields_are_unknown_at_save_without_the_data_model() -> None:
    with pytest.raises(FilterError, match="unknown field 'points'"):
        definitions.parse(workflow({"filter": {"field": "points", "op": "ge", "value": 10}}))


def test_a_resource_missing_from_the_workers_data_model_fails_at_run_time(
    harness: Harness, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a definition saved where the data model declares `store`
    monkeypatch.setenv("CARILLON_DATA_MODEL", str(model_file))
    body = workflow({"resource": "store", "filter": {"field": "code", "op": "notEmpty"}})
    # When a worker without it (CARILLON_DATA_MODEL unset in its settings) runs the query
    harness.start(body)
    harness.stub.drain()

    # Then the task fails with a clear message
    query = task(harness, "query1")
    assert query.state == "failed" and "unknown resource 'store'" in (query.error or "")
