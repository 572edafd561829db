"""Targeting activities on the SQLite harness: exact output sets, counts, logs and outlets."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from tests.conftest import Harness
from worker import catalog, definitions, marketing, populations, registry
from worker.activities import targeting
from worker.activities.base import Activity, Context
from worker.db import utcnow
from worker.errors import ActivityError, DefinitionError
from worker.marketing import audience, audience_member, profile, working_table
from worker.models import LogLine, Task, Workflow

ORG = "acme"
RIVAL = "rival"


# -- seeding and reading back ------------------------------------------------------------------


def seed_profiles(harness: Harness, rows: list[dict[str, Any]], org: str = ORG) -> list[int]:
    """Insert profiles of `org`; returns their ids in the order given."""
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        ids = []
        for row in rows:
            ids.append(
                s.execute(insert(profile).values(org_id=org_id, **row)).inserted_primary_key[0]
            )
        return ids


def seed_audience(
    harness: Harness, name: str, members: list[int], org: str = ORG, resource: str = "profile"
) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        audience_id = s.execute(
            insert(audience).values(org_id=org_id, name=name, resource=resource)
        ).inserted_primary_key[0]
        if members:
            s.execute(
                insert(audience_member),
                [{"audienceId": audience_id, "memberId": m} for m in members],
            )


def run(harness: Harness, activities: list[dict[str, Any]], org: str = ORG) -> None:
    """Start a workflow `start1 -> <first activity> ...`, adding the `end` activities named
    in transitions, and run it to the end."""
    defined = {a["name"] for a in activities}
    targets = {
        target
        for a in activities
        for value in a.get("transitions", {}).values()
        for target in ([value] if isinstance(value, str) else value)
    }
    ends = [{"name": n, "type": "end"} for n in sorted(targets - defined)]
    first = activities[0]["name"]
    body = {
        "id": f"wf{uuid.uuid4().hex[:8]}",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": first}},
            *activities,
            *ends,
        ],
    }
    harness.start(body, org)
    harness.stub.drain()


def latest_workflow() -> Any:
    """The workflow started last: helpers read its tasks (the integration database is
    shared by several tests, and a test may run several workflows)."""
    return select(func.max(Workflow.id)).scalar_subquery()


def task(harness: Harness, activity: str) -> Any:
    rows = harness.query(
        select(Task.state, Task.error, Task.outlets, Task.counts, Task.inputs).where(
            Task.activity == activity, Task.workflow_id == latest_workflow()
        )
    )
    assert len(rows) == 1, rows
    return rows[0]


def ids_of(harness: Harness, descriptor: dict[str, Any]) -> list[int]:
    table = populations.as_table(descriptor)
    return sorted(row[0] for row in harness.query(select(table.c.id)))


def received(harness: Harness, activity: str) -> list[int]:
    """The ids of the one population `activity` received."""
    inputs = task(harness, activity).inputs
    assert inputs is not None and len(inputs) == 1, inputs
    return ids_of(harness, next(iter(inputs.values())))


def rows_received(harness: Harness, activity: str) -> list[tuple[Any, ...]]:
    descriptor = next(iter(task(harness, activity).inputs.values()))
    table = populations.as_table(descriptor)
    return [tuple(r) for r in harness.query(select(table).order_by(table.c.id))]


def logs(harness: Harness, activity: str) -> list[str]:
    return [
        r[0]
        for r in harness.query(
            select(LogLine.message)
            .where(LogLine.activity == activity, LogLine.workflow_id == latest_workflow())
            .order_by(LogLine.id)
        )
    ]


def read(name: str, audience_name: str, target: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "readAudience",
        "audience": audience_name,
        "transitions": {"done": target},
    }


def fork(*targets: str) -> dict[str, Any]:
    return {"name": "fork1", "type": "fork", "transitions": {"done": list(targets)}}


# -- direct runs (reruns of one task, forged inputs) -------------------------------------------


@pytest.fixture
def session(harness: Harness) -> Iterator[Session]:
    """A session whose work is rolled back: direct runs leave nothing behind."""
    with harness.sessions() as s:
        yield s
        s.rollback()


def population(s: Session, org: str, ids: list[int], resource: str = "profile") -> dict[str, Any]:
    org_id = catalog.ensure_org(s, org).id
    table = marketing.metadata.tables[resource]
    owner = populations.Owner(s, org_id, 0, str(uuid.uuid4()), str(uuid.uuid4()), 1)
    return populations.create(owner, resource, select(table.c.id).where(table.c.id.in_(ids)))


def context(
    harness: Harness,
    s: Session,
    activity: Activity,
    inputs: dict[str, dict[str, Any]],
    *,
    task_id: str | None = None,
    attempt: int = 1,
    vars: dict[str, Any] | None = None,
    org: str = ORG,
) -> Context:
    return Context(
        task_id=task_id or str(uuid.uuid4()),
        workflow_id=0,
        job_id=str(uuid.uuid4()),
        activity=activity,
        vars=vars or {},
        counts={},
        attempt=attempt,
        now=utcnow(),
        session=s,
        org_id=catalog.ensure_org(s, org).id,
        inputs=inputs,
        settings=harness.settings,
    )


def activity(type_: str, transitions: dict[str, str] | None = None, **options: Any) -> Activity:
    targets = {outlet: (target,) for outlet, target in (transitions or {}).items()}
    return Activity(name=f"{type_}1", type=type_, options=options, transitions=targets)


def direct_ids(s: Session, descriptor: dict[str, Any]) -> list[int]:
    table = populations.as_table(descriptor)
    return sorted(s.scalars(select(table.c.id)))


# -- readAudience ----------------------------------------------------------------------------


def test_read_audience_gives_the_members_still_in_the_organization(harness: Harness) -> None:
    ours = seed_profiles(harness, [{"email": f"a{i}@x.org"} for i in range(5)])
    theirs = seed_profiles(harness, [{"email": "r@x.org"}], org=RIVAL)
    # A member of another organization and a deleted profile are in the audience's rows.
    seed_audience(harness, "vip", [ours[0], ours[2], ours[4], theirs[0], 999_999])
    seed_audience(harness, "vip", [theirs[0]], org=RIVAL)

    run(harness, [read("read1", "vip", "end1")])

    assert received(harness, "end1") == [ours[0], ours[2], ours[4]]
    assert task(harness, "read1").counts["read1"] == 3
    assert logs(harness, "read1") == ["3 record(s) read from audience 'vip'"]


def test_read_audience_of_another_organization_is_not_found(harness: Harness) -> None:
    seed_audience(harness, "theirs", [], org=RIVAL)

    run(harness, [read("read1", "theirs", "end1")])

    failed = task(harness, "read1")
    assert failed.state == "failed"
    assert "audience 'theirs' not found" in failed.error


def test_read_audience_takes_its_name_from_the_event_vars(harness: Harness) -> None:
    ids = seed_profiles(harness, [{"email": "a@x.org"}, {"email": "b@x.org"}])
    seed_audience(harness, "fromSignal", [ids[1]])
    body = {
        "id": "signalled",
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"audience": "string"},
                "transitions": {"done": "read1"},
            },
            read("read1", "$(vars/audience)", "end1"),
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    harness.engine.trigger_by_name("signalled", "signal1", "test", {"audience": "fromSignal"})
    harness.stub.drain()

    assert received(harness, "end1") == [ids[1]]


# -- union, intersection, exclusion --------------------------------------------------------


@pytest.fixture
def three_audiences(harness: Harness) -> list[int]:
    ids = seed_profiles(harness, [{"email": f"p{i}@x.org"} for i in range(6)])
    seed_audience(harness, "a", ids[0:4])
    seed_audience(harness, "b", ids[2:5])
    seed_audience(harness, "c", ids[3:6])
    return ids


def three_branches(join: dict[str, Any]) -> list[dict[str, Any]]:
    name = join["name"]
    return [
        fork("read1", "read2", "read3"),
        read("read1", "a", name),
        read("read2", "b", name),
        read("read3", "c", name),
        join,
    ]


def test_union_waits_for_every_branch_and_keeps_each_record_once(
    harness: Harness, three_audiences: list[int]
) -> None:
    run(
        harness,
        three_branches({"name": "union1", "type": "union", "transitions": {"done": "end1"}}),
    )

    assert received(harness, "end1") == sorted(three_audiences)
    assert task(harness, "union1").counts["union1"] == 6
    assert logs(harness, "union1") == ["6 record(s) in the union of 3 population(s)"]


def test_intersection_keeps_the_records_of_every_population(
    harness: Harness, three_audiences: list[int]
) -> None:
    run(
        harness,
        three_branches({"name": "inter1", "type": "intersection", "transitions": {"done": "end1"}}),
    )

    assert received(harness, "end1") == [three_audiences[3]]
    assert task(harness, "inter1").counts["inter1"] == 1


def test_exclusion_removes_the_other_populations_from_main(
    harness: Harness, three_audiences: list[int]
) -> None:
    run(
        harness,
        three_branches(
            {
                "name": "excl1",
                "type": "exclusion",
                "main": "read1",
                "transitions": {"done": "end1"},
            }
        ),
    )

    assert received(harness, "end1") == three_audiences[0:2]
    assert logs(harness, "excl1") == ["2 record(s) kept, 2 excluded"]


def test_exclusion_by_key_removes_records_sharing_a_value_but_never_null_ones(
    harness: Harness,
) -> None:
    ids = seed_profiles(
        harness,
        [
            {"email": "same@x.org"},
            {"email": "kept@x.org"},
            {"email": None},
            {"email": "same@x.org"},
            {"email": None},
        ],
    )
    seed_audience(harness, "main", ids[0:3])
    seed_audience(harness, "minus", ids[3:5])

    run(
        harness,
        [
            fork("read1", "read2"),
            read("read1", "main", "excl1"),
            read("read2", "minus", "excl1"),
            {
                "name": "excl1",
                "type": "exclusion",
                "main": "read1",
                "key": "email",
                "transitions": {"done": "end1"},
            },
        ],
    )

    assert received(harness, "end1") == [ids[1], ids[2]]


def test_exclusion_fails_when_main_is_not_an_input(harness: Harness) -> None:
    seed_audience(harness, "a", [])
    run(
        harness,
        [
            fork("read1", "read2"),
            read("read1", "a", "excl1"),
            read("read2", "a", "excl1"),
            {
                "name": "excl1",
                "type": "exclusion",
                "main": "read9",
                "transitions": {"done": "end1"},
            },
        ],
    )

    failed = task(harness, "excl1")
    assert failed.state == "failed"
    assert "main population 'read9' is not among the inputs (inbound: read1, read2)" in failed.error


def test_set_operations_refuse_populations_of_different_resources(harness: Harness) -> None:
    ids = seed_profiles(harness, [{"email": "a@x.org"}])
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, ORG).id
        service_id = s.execute(
            insert(marketing.service).values(org_id=org_id, name="news")
        ).inserted_primary_key[0]
    seed_audience(harness, "people", ids)
    seed_audience(harness, "services", [service_id], resource="service")

    run(
        harness,
        [
            fork("read1", "read2"),
            read("read1", "people", "union1"),
            read("read2", "services", "union1"),
            {"name": "union1", "type": "union", "transitions": {"done": "end1"}},
        ],
    )

    failed = task(harness, "union1")
    assert failed.state == "failed"
    assert "different resources (profile, service)" in failed.error


def test_inputs_that_are_not_this_organizations_working_tables_are_refused(
    harness: Harness, session: Session
) -> None:
    ours = seed_profiles(harness, [{"email": "a@x.org"}])
    theirs = seed_profiles(harness, [{"email": "b@x.org"}], org=RIVAL)
    union = registry.get("union")
    mine = population(session, ORG, ours)
    foreign = population(session, RIVAL, theirs)
    forged = {**mine, "table": "profile"}

    for bad in (foreign, forged):
        ctx = context(harness, session, activity("union"), {"a": mine, "b": bad})
        with pytest.raises(ActivityError, match="not a working table of this organization"):
            union.run(ctx)
    ctx = context(harness, session, activity("union"), {"a": mine, "b": {"kind": "file"}})
    with pytest.raises(ActivityError, match="'b' carries a file, not a population"):
        union.run(ctx)


# -- segmentation ----------------------------------------------------------------------------


@pytest.fixture
def hundred(harness: Harness) -> list[int]:
    """100 profiles in an audience `all`: every third in FR, first names z..a, some NULL."""
    rows = [
        {
            "email": f"p{i}@x.org",
            "country": "FR" if i % 3 == 0 else "DE",
            "firstName": None if i % 10 == 7 else f"n{i % 13:02d}",
        }
        for i in range(100)
    ]
    ids = seed_profiles(harness, rows)
    seed_audience(harness, "all", ids)
    return ids


def segmentation(transitions: dict[str, str], **options: Any) -> dict[str, Any]:
    return {"name": "seg1", "type": "segmentation", "transitions": transitions, **options}


def test_percent_and_count_segments_are_consecutive_ranges_in_id_order(
    harness: Harness, hundred: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"a": "endA", "c": "endC", "remainder": "endR"},
                segments=[
                    {"name": "a", "percent": 10},
                    {"name": "b", "count": 25},
                    {"name": "c", "percent": 50, "count": 80},
                ],
                remainder=True,
            ),
        ],
    )

    assert received(harness, "endA") == hundred[0:10]
    assert received(harness, "endC") == hundred[35:85]
    assert received(harness, "endR") == hundred[85:100]
    done = task(harness, "seg1")
    # b has no transition: not fired, but counted.
    assert done.outlets == ["a", "c", "remainder"]
    assert {k: v for k, v in done.counts.items() if k.startswith("seg1")} == {
        "seg1": 100,
        "seg1_a": 10,
        "seg1_b": 25,
        "seg1_c": 50,
        "seg1_remainder": 15,
    }
    assert logs(harness, "seg1") == [
        "100 record(s) to segment",
        "10 record(s) in segment 'a'",
        "25 record(s) in segment 'b'",
        "50 record(s) in segment 'c'",
        "15 record(s) in the remainder",
    ]


def test_filter_segments_take_matching_records_left_by_earlier_segments(
    harness: Harness, hundred: list[int]
) -> None:
    fr = [pid for i, pid in enumerate(hundred) if i % 3 == 0]
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"fr5": "end1", "first10": "end2", "fr": "end3", "remainder": "end4"},
                segments=[
                    {
                        "name": "fr5",
                        "filter": {"field": "country", "op": "eq", "value": "FR"},
                        "count": 5,
                    },
                    {"name": "first10", "percent": 10},
                    {"name": "fr", "filter": {"field": "country", "op": "eq", "value": "FR"}},
                ],
                remainder=True,
            ),
        ],
    )

    fr5 = fr[:5]
    first10 = [pid for pid in hundred if pid not in fr5][:10]
    rest_fr = [pid for pid in fr if pid not in fr5 + first10]
    remainder = [pid for pid in hundred if pid not in fr5 + first10 + rest_fr]
    assert received(harness, "end1") == fr5
    assert received(harness, "end2") == first10
    assert received(harness, "end3") == rest_fr
    assert received(harness, "end4") == remainder
    assert task(harness, "seg1").counts["seg1_fr"] == len(rest_fr)


def test_segments_follow_the_order_option_with_nulls_last(
    harness: Harness, hundred: list[int]
) -> None:
    names = {pid: None if i % 10 == 7 else f"n{i % 13:02d}" for i, pid in enumerate(hundred)}
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"top": "end1", "remainder": "end2"},
                segments=[{"name": "top", "count": 95}],
                order={"field": "firstName", "direction": "desc"},
                remainder=True,
            ),
        ],
    )

    ranked = sorted(hundred, key=lambda pid: (names[pid] is None, _desc(names[pid]), pid))
    assert received(harness, "end1") == sorted(ranked[:95])
    assert received(harness, "end2") == sorted(ranked[95:])
    assert all(names[pid] is None for pid in received(harness, "end2"))


def _desc(name: str | None) -> tuple[int, ...]:
    return tuple(-ord(c) for c in name or "")


def test_random_segments_are_disjoint_complete_and_not_the_id_order(
    harness: Harness, hundred: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"a": "end1", "b": "end2", "remainder": "end3"},
                segments=[{"name": "a", "percent": 30}, {"name": "b", "percent": 30}],
                random=True,
                remainder=True,
            ),
        ],
    )

    a, b, rest = (received(harness, end) for end in ("end1", "end2", "end3"))
    assert (len(a), len(b), len(rest)) == (30, 30, 40)
    assert sorted(a + b + rest) == hundred
    assert a != hundred[:30]


@pytest.mark.parametrize(
    "options",
    [
        {"random": True},
        {"order": {"field": "firstName"}},
        {"order": {"field": "firstName", "direction": "desc"}},
        {},
    ],
)
def test_a_rerun_of_the_same_task_gives_the_same_segments_with_either_strategy(
    harness: Harness,
    session: Session,
    hundred: list[int],
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
) -> None:
    source = population(session, ORG, hundred)
    segments = [
        {"name": "a", "percent": 12.5},
        {"name": "b", "count": 20},
        {"name": "c", "percent": 40},
    ]
    kind = registry.get("segmentation")
    act = activity(
        "segmentation",
        {"a": "x", "b": "y", "c": "z", "remainder": "r"},
        segments=segments,
        remainder=True,
        **options,
    )
    task_id = str(uuid.uuid4())

    def segments_of(attempt: int) -> dict[str, list[int]]:
        ctx = context(harness, session, act, {"read1": source}, task_id=task_id, attempt=attempt)
        outcome = kind.run(ctx)
        assert outcome.outputs is not None
        return {name: direct_ids(session, d) for name, d in outcome.outputs.items()}

    first = segments_of(1)
    # Four outputs: past DIRECT_OUTPUTS_MAX, numbered once and assigned.
    assert [len(first[k]) for k in ("a", "b", "c", "remainder")] == [12, 20, 40, 28]
    assert sorted(pid for ids in first.values() for pid in ids) == hundred
    assert segments_of(2) == first
    monkeypatch.setattr(targeting, "DIRECT_OUTPUTS_MAX", 10)
    assert segments_of(3) == first


def test_another_task_draws_another_random_segment(
    harness: Harness, session: Session, hundred: list[int]
) -> None:
    source = population(session, ORG, hundred)
    act = activity("segmentation", {"a": "x"}, segments=[{"name": "a", "percent": 20}], random=True)
    kind = registry.get("segmentation")
    drawn = []
    for _ in range(2):
        outcome = kind.run(context(harness, session, act, {"read1": source}))
        assert outcome.outputs is not None
        drawn.append(direct_ids(session, outcome.outputs["a"]))
    assert len(drawn[0]) == len(drawn[1]) == 20
    assert drawn[0] != drawn[1]


def test_limits_beyond_the_population_take_what_is_left(
    harness: Harness, hundred: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"none": "end1", "most": "end2", "late": "end3"},
                segments=[
                    {"name": "none", "percent": 0},
                    {"name": "most", "count": 1_000_000},
                    {"name": "late", "percent": 100},
                ],
            ),
        ],
    )

    assert received(harness, "end1") == []
    assert received(harness, "end2") == hundred
    assert received(harness, "end3") == []


def test_an_empty_population_gives_empty_segments(harness: Harness) -> None:
    seed_audience(harness, "empty", [])
    run(
        harness,
        [
            read("read1", "empty", "seg1"),
            segmentation(
                {"a": "end1", "remainder": "end2"},
                segments=[{"name": "a", "filter": {"field": "country", "op": "eq", "value": "FR"}}],
                remainder=True,
            ),
        ],
    )

    assert received(harness, "end1") == received(harness, "end2") == []
    assert task(harness, "seg1").counts["seg1_remainder"] == 0


def test_a_filter_on_an_unknown_field_fails_at_run_and_writes_nothing(
    harness: Harness, hundred: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "all", "seg1"),
            segmentation(
                {"a": "end1"},
                segments=[{"name": "a", "filter": {"field": "shoeSize", "op": "eq", "value": 9}}],
            ),
        ],
    )

    failed = task(harness, "seg1")
    assert failed.state == "failed"
    assert "unknown field 'shoeSize'" in failed.error
    tables = harness.query(select(func.count()).select_from(working_table))[0][0]
    assert tables == 1  # read1's only


# -- deduplication ---------------------------------------------------------------------------


@pytest.fixture
def with_duplicates(harness: Harness) -> list[int]:
    rows = [
        {"email": "one@x.org", "firstName": "b", "country": "FR"},
        {"email": "two@x.org", "firstName": "a", "country": "FR"},
        {"email": None, "firstName": "c", "country": "FR"},
        {"email": "one@x.org", "firstName": "z", "country": "DE"},
        {"email": "two@x.org", "firstName": None, "country": "FR"},
        {"email": "one@x.org", "firstName": "a", "country": "FR"},
        {"email": None, "firstName": "d", "country": "FR"},
    ]
    ids = seed_profiles(harness, rows)
    seed_audience(harness, "dups", ids)
    return ids


def dedup(transitions: dict[str, str], **options: Any) -> dict[str, Any]:
    return {"name": "dedup1", "type": "deduplication", "transitions": transitions, **options}


def test_deduplication_keeps_the_lowest_id_and_never_merges_null_keys(
    harness: Harness, with_duplicates: list[int]
) -> None:
    p = with_duplicates
    run(
        harness,
        [
            read("read1", "dups", "dedup1"),
            dedup({"done": "end1", "duplicates": "end2"}, fields=["email"]),
        ],
    )

    assert received(harness, "end1") == [p[0], p[1], p[2], p[6]]
    assert received(harness, "end2") == [p[3], p[4], p[5]]
    done = task(harness, "dedup1")
    assert done.outlets == ["done", "duplicates"]
    assert (done.counts["dedup1"], done.counts["dedup1_duplicates"]) == (4, 3)
    assert logs(harness, "dedup1") == ["4 record(s) kept, 3 duplicate(s) removed"]


def test_deduplication_keeps_by_the_keep_order_and_on_several_fields(
    harness: Harness, with_duplicates: list[int]
) -> None:
    p = with_duplicates
    run(
        harness,
        [
            read("read1", "dups", "dedup1"),
            dedup(
                {"done": "end1"},
                fields=["email", "country"],
                keep={"field": "firstName", "direction": "desc"},
            ),
        ],
    )

    # one@/FR: p0 (b) and p5 (a) -> b; two@/FR: p1 (a) and p4 (NULL, last) -> a.
    assert received(harness, "end1") == [p[0], p[1], p[2], p[3], p[6]]
    done = task(harness, "dedup1")
    assert done.outlets == ["done"]
    assert done.counts["dedup1_duplicates"] == 2


# -- enrichment ------------------------------------------------------------------------------


@pytest.fixture
def subscribers(harness: Harness) -> list[int]:
    ids = seed_profiles(
        harness,
        [{"email": "a@x.org", "firstName": "Ann"}, {"email": "b@x.org", "firstName": "Bob"}],
    )
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, ORG).id
        news, alerts = (
            s.execute(
                insert(marketing.service).values(org_id=org_id, name=name, channel=channel)
            ).inserted_primary_key[0]
            for name, channel in (("news", "email"), ("alerts", "sms"))
        )
        day = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
        s.execute(
            insert(marketing.subscription),
            [
                {"profileId": ids[0], "serviceId": news, "created": day},
                {"profileId": ids[0], "serviceId": alerts, "created": day + dt.timedelta(days=3)},
            ],
        )
    seed_audience(harness, "subs", ids)
    return ids


def test_enrichment_adds_fields_and_aggregates_over_linked_rows(
    harness: Harness, subscribers: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "subs", "enrich1"),
            {
                "name": "enrich1",
                "type": "enrichment",
                "columns": [
                    {"name": "first", "field": "firstName"},
                    {"name": "subs", "aggregate": "count", "link": "subscriptions"},
                    {
                        "name": "emailSubs",
                        "aggregate": "count",
                        "link": "subscriptions",
                        "filter": {"field": "channel", "op": "eq", "value": "email"},
                    },
                    {
                        "name": "firstService",
                        "aggregate": "min",
                        "link": "subscriptions",
                        "field": "service",
                    },
                ],
                "transitions": {"done": "end1"},
            },
        ],
    )

    descriptor = next(iter(task(harness, "end1").inputs.values()))
    assert descriptor["columns"] == ["first", "subs", "emailSubs", "firstService"]
    assert rows_received(harness, "end1") == [
        (subscribers[0], "Ann", 2, 1, "alerts"),
        (subscribers[1], "Bob", 0, 0, None),
    ]
    assert logs(harness, "enrich1") == ["2 record(s) enriched with 4 column(s)"]


def test_enriched_columns_travel_through_later_activities_and_can_be_replaced(
    harness: Harness, subscribers: list[int]
) -> None:
    run(
        harness,
        [
            read("read1", "subs", "enrich1"),
            {
                "name": "enrich1",
                "type": "enrichment",
                "columns": [
                    {"name": "label", "field": "email"},
                    {"name": "who", "field": "firstName"},
                ],
                "transitions": {"done": "enrich2"},
            },
            {
                "name": "enrich2",
                "type": "enrichment",
                "columns": [{"name": "LABEL", "field": "firstName"}],
                "transitions": {"done": "seg1"},
            },
            segmentation({"one": "end1"}, segments=[{"name": "one", "count": 1}]),
        ],
    )

    assert rows_received(harness, "end1") == [(subscribers[0], "Ann", "Ann")]
    descriptor = next(iter(task(harness, "end1").inputs.values()))
    assert descriptor["columns"] == ["who", "LABEL"]


# -- saveAudience ----------------------------------------------------------------------------


def audience_rows(harness: Harness, name: str, org: str = ORG) -> tuple[Any, list[int]]:
    with harness.sessions() as s:
        org_id = catalog.ensure_org(s, org).id
        row = s.execute(
            select(audience).where(audience.c.org_id == org_id, audience.c.name == name)
        ).one()
        members = sorted(
            s.scalars(
                select(audience_member.c.memberId).where(audience_member.c.audienceId == row.id)
            )
        )
        return row, members


def save(name: str, target: str, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "saveAudience",
        "audience": "saved",
        "transitions": {"done": target},
        **options,
    }


def test_save_audience_replaces_then_appends_members_and_passes_the_population_on(
    harness: Harness,
) -> None:
    ids = seed_profiles(harness, [{"email": f"s{i}@x.org"} for i in range(5)])
    theirs = seed_profiles(harness, [{"email": "r@x.org"}], org=RIVAL)
    seed_audience(harness, "first", ids[0:3])
    seed_audience(harness, "second", [*ids[2:5], theirs[0]])
    seed_audience(harness, "saved", theirs, org=RIVAL)

    run(
        harness,
        [read("read1", "first", "save1"), save("save1", "end1", label="Saved $(vars/missing)")],
    )
    row, members = audience_rows(harness, "saved")
    assert members == ids[0:3]
    assert (row.count, row.label, row.resource) == (3, "Saved ", "profile")
    assert received(harness, "end1") == ids[0:3]  # passed through
    assert logs(harness, "save1") == ["3 record(s) in audience 'saved' (replace)"]

    run(harness, [read("read1", "second", "save1"), save("save1", "end1", mode="append")])
    row, members = audience_rows(harness, "saved")
    assert members == ids  # the rival's profile is not ours to add
    assert row.count == 5
    assert row.lastModified > row.created

    run(harness, [read("read1", "second", "save1"), save("save1", "end1")])
    assert audience_rows(harness, "saved")[1] == ids[2:5]
    # The other organization's audience of the same name is untouched.
    assert audience_rows(harness, "saved", org=RIVAL)[1] == theirs


def test_save_audience_name_from_vars_is_checked(harness: Harness, session: Session) -> None:
    ids = seed_profiles(harness, [{"email": "a@x.org"}])
    source = population(session, ORG, ids)
    kind = registry.get("saveAudience")
    act = activity("saveAudience", audience="$(vars/name)")

    kind.run(context(harness, session, act, {"q": source}, vars={"name": "fromVars"}))
    saved = session.execute(select(audience.c.count).where(audience.c.name == "fromVars")).one()
    assert saved.count == 1
    for bad in ("x'; DROP TABLE audience; --", None, 12, "a" * 65):
        with pytest.raises(ActivityError, match="invalid audience name"):
            kind.run(context(harness, session, act, {"q": source}, vars={"name": bad}))


def test_append_to_an_audience_of_another_resource_is_refused(
    harness: Harness, session: Session
) -> None:
    ids = seed_profiles(harness, [{"email": "a@x.org"}])
    seed_audience(harness, "services", [], resource="service")
    act = activity("saveAudience", audience="services", mode="append")
    ctx = context(harness, session, act, {"q": population(session, ORG, ids)})
    with pytest.raises(ActivityError, match="holds service records, not profile"):
        registry.get("saveAudience").run(ctx)


# -- definitions refused at save ---------------------------------------------------------------


def _single_input(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "start1", "type": "start", "transitions": {"done": "read1"}},
        read("read1", "a", node["name"]),
        node,
        {"name": "end1", "type": "end"},
    ]


def _seg(**options: Any) -> dict[str, Any]:
    return {"name": "node1", "type": "segmentation", "transitions": {}, **options}


BAD_SINGLE_INPUT = [
    (_seg(), "option 'segments' is required"),
    (_seg(segments=[]), "list of 1 to 50 segments"),
    (_seg(segments=[{"name": f"s{i}", "count": 1} for i in range(51)]), "list of 1 to 50"),
    (_seg(segments=[{"name": "a b", "count": 1}]), "segments[0].name must be an identifier"),
    (_seg(segments=[{"name": "1a", "count": 1}]), "must be an identifier"),
    (_seg(segments=[{"name": "x" * 64, "count": 1}]), "must be an identifier"),
    (_seg(segments=[{"name": "remainder", "count": 1}]), "other than 'remainder'"),
    (_seg(segments=[{"name": "a", "count": 1}, {"name": "a", "count": 2}]), "'a' is used twice"),
    (_seg(segments=[{"name": "a"}]), "give a filter, a percent or a count"),
    (_seg(segments=[{"name": "a", "percent": 101}]), "percent must be a number from 0 to 100"),
    (_seg(segments=[{"name": "a", "percent": -1}]), "percent must be a number from 0 to 100"),
    (_seg(segments=[{"name": "a", "percent": True}]), "percent must be a number"),
    (_seg(segments=[{"name": "a", "percent": "10"}]), "percent must be a number"),
    (_seg(segments=[{"name": "a", "count": -1}]), "count must be a whole number >= 0"),
    (_seg(segments=[{"name": "a", "count": 1.5}]), "count must be a whole number"),
    (_seg(segments=[{"name": "a", "count": 2**63}]), "count must be a whole number"),
    (_seg(segments=[{"name": "a", "count": 1, "sql": "x"}]), "must be {name, filter?"),
    (_seg(segments=[{"name": "a", "filter": {"field": "x", "op": "drop"}}]), "unknown operator"),
    (
        _seg(segments=[{"name": "a", "count": 1}], order={"field": "email; DROP TABLE profile"}),
        "unknown field 'email; DROP TABLE profile'",
    ),
    (
        _seg(segments=[{"name": "a", "count": 1}], order={"field": "email", "direction": "up"}),
        "direction must be 'asc' or 'desc'",
    ),
    (
        _seg(segments=[{"name": "a", "count": 1}], order={"field": "email"}, random=True),
        "either 'order' or 'random: true'",
    ),
    (_seg(segments=[{"name": "a", "count": 1}], random="yes"), "option 'random' must be bool"),
    (_seg(segments=[{"name": "a", "count": 1}], transitions={"b": "end1"}), "unknown outlet 'b'"),
    ({"name": "node1", "type": "deduplication", "transitions": {}}, "option 'fields' is required"),
    ({"name": "node1", "type": "deduplication", "fields": ["id) OR (1=1"]}, "unknown field"),
    ({"name": "node1", "type": "deduplication", "fields": ["email", "email"]}, "listed twice"),
    ({"name": "node1", "type": "deduplication", "fields": []}, "list of 1 to 20"),
    (
        {"name": "node1", "type": "deduplication", "fields": ["email"], "keep": {"field": 3}},
        "unknown field",
    ),
    (
        {"name": "node1", "type": "enrichment", "columns": [{"name": "id", "field": "email"}]},
        "not 'id'",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "x; DROP TABLE p", "field": "email"}],
        },
        "must be an identifier",
    ),
    (
        {"name": "node1", "type": "enrichment", "columns": [{"name": "_x", "field": "email"}]},
        "must be an identifier",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "a", "field": "email"}, {"name": "A", "field": "city"}],
        },
        "'A' is used twice",
    ),
    (
        {"name": "node1", "type": "enrichment", "columns": [{"name": "a", "field": "e-mail"}]},
        "unknown field 'e-mail'",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "a", "field": "email", "sql": "1"}],
        },
        "must be {name, field}",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "a", "aggregate": "avg", "link": "subscriptions"}],
        },
        "aggregate must be one of count, min, max, sum",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "a", "aggregate": "count", "link": "orders"}],
        },
        "unknown link 'orders' (known: subscriptions)",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [{"name": "a", "aggregate": "max", "link": "subscriptions"}],
        },
        "max needs a field of 'subscriptions'",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [
                {"name": "a", "aggregate": "sum", "link": "subscriptions", "field": "service"}
            ],
        },
        "cannot sum string field 'service'",
    ),
    (
        {
            "name": "node1",
            "type": "enrichment",
            "columns": [
                {
                    "name": "a",
                    "aggregate": "count",
                    "link": "subscriptions",
                    "filter": {"field": "country", "op": "eq", "value": "FR"},
                }
            ],
        },
        "unknown field 'country' of resource 'subscriptions'",
    ),
    ({"name": "node1", "type": "saveAudience"}, "option 'audience' is required"),
    ({"name": "node1", "type": "saveAudience", "audience": "a b"}, "an audience name is"),
    (
        {"name": "node1", "type": "saveAudience", "audience": "a", "mode": "merge"},
        "must be 'replace' or 'append'",
    ),
    ({"name": "node1", "type": "readAudience", "audience": "'; --"}, "an audience name is"),
]


@pytest.mark.parametrize(("node", "message"), BAD_SINGLE_INPUT)
def test_hostile_options_are_refused_when_the_workflow_is_saved(
    node: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError, match="activity 'node1'") as refused:
        definitions.parse({"id": "bad", "activities": _single_input(node)})
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"name": "node1", "type": "exclusion", "main": "read1; --"}, "must name an inbound"),
        ({"name": "node1", "type": "exclusion"}, "option 'main' is required"),
        ({"name": "node1", "type": "exclusion", "main": "read1", "key": "e mail"}, "unknown field"),
        ({"name": "node1", "type": "union", "dedupe": True}, "unknown option 'dedupe'"),
    ],
)
def test_hostile_join_options_are_refused_when_the_workflow_is_saved(
    node: dict[str, Any], message: str
) -> None:
    body = {
        "id": "badJoin",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            fork("read1", "read2"),
            read("read1", "a", "node1"),
            read("read2", "b", "node1"),
            {**node, "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    with pytest.raises(DefinitionError, match="activity 'node1'") as refused:
        definitions.parse(body)
    assert message in refused.value.message


def test_a_join_type_with_one_inbound_transition_is_refused() -> None:
    with pytest.raises(DefinitionError, match="node1"):
        definitions.parse(
            {
                "id": "lonely",
                "activities": _single_input(
                    {"name": "node1", "type": "union", "transitions": {"done": "end1"}}
                ),
            }
        )


def test_the_targeting_types_are_data_activities() -> None:
    names = {
        "union",
        "intersection",
        "exclusion",
        "segmentation",
        "deduplication",
        "enrichment",
        "saveAudience",
        "readAudience",
    }
    assert names <= set(registry.data_types())
    assert all(registry.get(name).family == "targeting" for name in names)
