"""Targeting activities on real PostgreSQL: the unit semantics, unlogged tables, 100k records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import distinct, func, insert, select, text, union_all
from sqlalchemy.orm import Session

from tests.conftest import Harness
from tests.unit.test_targeting import (
    activity,
    audience_rows,
    context,
    direct_ids,
    fork,
    logs,
    population,
    read,
    received,
    rows_received,
    run,
    save,
    seed_audience,
    seed_profiles,
    segmentation,
    task,
)
from worker import catalog, marketing, populations, registry
from worker.activities import targeting

pytestmark = pytest.mark.integration


@pytest.fixture
def org() -> str:
    """An organization of the test's own: the database is shared by the module."""
    return f"org_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rival() -> str:
    return f"rival_{uuid.uuid4().hex[:12]}"


def test_set_operations_and_audience_isolation(pg_harness: Harness, org: str, rival: str) -> None:
    ids = seed_profiles(
        pg_harness,
        [{"email": "same@x.org" if i in (0, 5) else f"p{i}@x.org"} for i in range(6)],
        org,
    )
    theirs = seed_profiles(pg_harness, [{"email": "r@x.org"}], rival)
    seed_audience(pg_harness, "a", [*ids[0:4], theirs[0]], org)
    seed_audience(pg_harness, "b", ids[2:5], org)
    seed_audience(pg_harness, "c", ids[3:6], org)
    seed_audience(pg_harness, "a", theirs, rival)
    expected = {
        "union": ids,
        "intersection": [ids[3]],
        "exclusion": ids[0:2],
        # ids[0] shares its email with ids[5], which the third audience holds.
        "exclusionByKey": [ids[1]],
    }

    # One join per workflow: a task feeding two and-joins is refused by the engine
    # (join_arrival.from_task_id is unique).
    for kind, result in expected.items():
        node: dict[str, Any] = {"name": "join1", "type": kind, "transitions": {"done": "end1"}}
        if kind.startswith("exclusion"):
            node.update(type="exclusion", main="read1")
        if kind == "exclusionByKey":
            node["key"] = "email"
        run(
            pg_harness,
            [
                fork("read1", "read2", "read3"),
                read("read1", "a", "join1"),
                read("read2", "b", "join1"),
                read("read3", "c", "join1"),
                node,
            ],
            org,
        )
        assert received(pg_harness, "end1") == result, kind
    assert logs(pg_harness, "join1") == ["1 record(s) kept, 3 excluded"]


def test_segments_by_filter_percent_count_and_order(pg_harness: Harness, org: str) -> None:
    rows = [
        {
            "email": f"p{i}@x.org",
            "country": "FR" if i % 3 == 0 else "DE",
            "firstName": None if i % 10 == 7 else f"n{i % 13:02d}",
        }
        for i in range(100)
    ]
    ids = seed_profiles(pg_harness, rows, org)
    seed_audience(pg_harness, "all", ids, org)
    names = {pid: row["firstName"] for pid, row in zip(ids, rows, strict=True)}
    fr = [pid for pid, row in zip(ids, rows, strict=True) if row["country"] == "FR"]

    run(
        pg_harness,
        [
            {
                "name": "read1",
                "type": "readAudience",
                "audience": "all",
                "transitions": {"done": ["seg1", "seg2"]},
            },
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
            {
                "name": "seg2",
                "type": "segmentation",
                "segments": [{"name": "top", "count": 95}],
                "order": {"field": "firstName", "direction": "desc"},
                "remainder": True,
                "transitions": {"top": "end5", "remainder": "end6"},
            },
        ],
        org,
    )

    fr5 = fr[:5]
    first10 = [pid for pid in ids if pid not in fr5][:10]
    rest_fr = [pid for pid in fr if pid not in fr5 + first10]
    assert received(pg_harness, "end1") == fr5
    assert received(pg_harness, "end2") == first10
    assert received(pg_harness, "end3") == rest_fr
    assert received(pg_harness, "end4") == sorted(set(ids) - set(fr5 + first10 + rest_fr))
    # firstName descending, NULLs last, ties by id.
    ranked = sorted(
        ids, key=lambda pid: (names[pid] is None, [-ord(c) for c in names[pid] or ""], pid)
    )
    assert received(pg_harness, "end5") == sorted(ranked[:95])
    assert received(pg_harness, "end6") == sorted(ranked[95:])


@pytest.mark.parametrize("options", [{"random": True}, {"order": {"field": "email"}}])
def test_a_rerun_gives_the_same_segments_with_either_strategy(
    pg_harness: Harness, org: str, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    ids = seed_profiles(pg_harness, [{"email": f"{i:03d}@x.org"} for i in range(200)], org)
    kind = registry.get("segmentation")
    act = activity(
        "segmentation",
        {"a": "x", "b": "y", "c": "z", "remainder": "r"},
        segments=[
            {"name": "a", "percent": 12.5},
            {"name": "b", "count": 30},
            {"name": "c", "percent": 40},
        ],
        remainder=True,
        **options,
    )
    task_id = str(uuid.uuid4())
    with pg_harness.sessions() as s:
        source = population(s, org, ids)

        def segments_of(attempt: int) -> dict[str, list[int]]:
            ctx = context(
                pg_harness, s, act, {"read1": source}, task_id=task_id, attempt=attempt, org=org
            )
            outcome = kind.run(ctx)
            assert outcome.outputs is not None
            return {name: direct_ids(s, d) for name, d in outcome.outputs.items()}

        first = segments_of(1)
        assert [len(first[k]) for k in ("a", "b", "c", "remainder")] == [25, 30, 80, 65]
        assert segments_of(2) == first
        monkeypatch.setattr(targeting, "DIRECT_OUTPUTS_MAX", 10)
        assert segments_of(3) == first
        s.rollback()


def test_dedup_enrichment_and_saved_audiences(pg_harness: Harness, org: str, rival: str) -> None:
    ids = seed_profiles(
        pg_harness,
        [
            {"email": "one@x.org", "firstName": "Ann"},
            {"email": "one@x.org", "firstName": "Bob"},
            {"email": None, "firstName": "Cy"},
            {"email": None, "firstName": "Di"},
        ],
        org,
    )
    with pg_harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        service = s.execute(
            insert(marketing.service).values(org_id=org_id, name="news")
        ).inserted_primary_key[0]
        s.execute(insert(marketing.subscription).values(profileId=ids[2], serviceId=service))
    seed_audience(pg_harness, "input", ids, org)
    seed_audience(pg_harness, "saved", [], rival)

    run(
        pg_harness,
        [
            read("read1", "input", "dedup1"),
            {
                "name": "dedup1",
                "type": "deduplication",
                "fields": ["email"],
                "keep": {"field": "firstName", "direction": "desc"},
                "transitions": {"done": "enrich1", "duplicates": "end2"},
            },
            {
                "name": "enrich1",
                "type": "enrichment",
                "columns": [
                    {"name": "first", "field": "firstName"},
                    {
                        "name": "subs",
                        "aggregate": "count",
                        "link": "subscriptions",
                        "filter": {"field": "service", "op": "eq", "value": "news"},
                    },
                ],
                "transitions": {"done": "save1"},
            },
            save("save1", "end1", label="Deduplicated"),
        ],
        org,
    )

    assert rows_received(pg_harness, "end1") == [
        (ids[1], "Bob", 0),
        (ids[2], "Cy", 1),
        (ids[3], "Di", 0),
    ]
    assert received(pg_harness, "end2") == [ids[0]]
    row, members = audience_rows(pg_harness, "saved", org)
    assert (members, row.count, row.label) == ([ids[1], ids[2], ids[3]], 3, "Deduplicated")
    assert audience_rows(pg_harness, "saved", rival)[1] == []
    assert task(pg_harness, "dedup1").counts["dedup1_duplicates"] == 1


def test_working_tables_are_unlogged(pg_harness: Harness, org: str) -> None:
    ids = seed_profiles(pg_harness, [{"email": "a@x.org"}], org)
    seed_audience(pg_harness, "one", ids, org)

    run(
        pg_harness,
        [
            read("read1", "one", "seg1"),
            segmentation({"a": "end1"}, segments=[{"name": "a", "count": 1}]),
        ],
        org,
    )

    name = next(iter(task(pg_harness, "end1").inputs.values()))["table"]
    persistence = pg_harness.query(
        text("SELECT relpersistence FROM pg_class WHERE relname = :name").bindparams(name=name)
    )
    assert persistence[0][0] == "u"


def _coverage(s: Session, source: dict[str, Any], outputs: list[dict[str, Any]]) -> tuple[int, ...]:
    """(placed, distinct placed, input size, placed but not in the input), in one query."""
    placed = union_all(*(select(populations.as_table(d).c.id) for d in outputs)).subquery()
    inbound = populations.as_table(source)
    query = select(
        func.count(),
        func.count(distinct(placed.c.id)),
        select(func.count()).select_from(inbound).scalar_subquery(),
        func.count().filter(inbound.c.id.is_(None)),
    ).select_from(placed.outerjoin(inbound, inbound.c.id == placed.c.id))
    return tuple(s.execute(query).one())


def test_segmenting_100k_generated_profiles_is_disjoint_and_complete(
    pg_harness: Harness, org: str
) -> None:
    # Given 100,000 profiles (a third in FR) in one audience, generated in SQL.
    with pg_harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        s.execute(
            text(
                "INSERT INTO profile (org_id, email, country, created, last_modified) "
                "SELECT :org, 'p' || g || '@x.org', CASE WHEN g % 3 = 0 THEN 'FR' ELSE 'DE' END, "
                "now(), now() FROM generate_series(1, 100000) g"
            ),
            {"org": org_id},
        )
        audience_id = s.execute(
            insert(marketing.audience).values(org_id=org_id, name="big")
        ).inserted_primary_key[0]
        s.execute(
            text(
                "INSERT INTO audience_member (audience_id, member_id) "
                "SELECT :audience, id FROM profile WHERE org_id = :org"
            ),
            {"audience": audience_id, "org": org_id},
        )
    # When one segmentation mixes filters and limits in random order (numbered and
    # assigned), and another splits by percent (ranges of the id order).
    run(
        pg_harness,
        [
            {
                "name": "read1",
                "type": "readAudience",
                "audience": "big",
                "transitions": {"done": ["seg1", "seg2"]},
            },
            segmentation(
                {"fr": "e1", "quarter": "e2", "tenK": "e3", "more": "e4", "remainder": "e5"},
                segments=[
                    {
                        "name": "fr",
                        "filter": {"field": "country", "op": "eq", "value": "FR"},
                        "count": 20000,
                    },
                    {"name": "quarter", "percent": 25},
                    {"name": "tenK", "count": 10000},
                    {
                        "name": "more",
                        "filter": {"field": "country", "op": "eq", "value": "FR"},
                        "percent": 30,
                    },
                ],
                random=True,
                remainder=True,
            ),
            {
                "name": "seg2",
                "type": "segmentation",
                "segments": [{"name": "test", "percent": 10}, {"name": "rest", "percent": 90}],
                "transitions": {"test": "e6", "rest": "e7"},
            },
        ],
        org,
    )

    # Then every record is in exactly one segment, and the sizes are the limits.
    source = next(iter(task(pg_harness, "seg1").inputs.values()))
    with pg_harness.sessions() as s:
        for ends in (["e1", "e2", "e3", "e4", "e5"], ["e6", "e7"]):
            outputs = [next(iter(task(pg_harness, end).inputs.values())) for end in ends]
            assert _coverage(s, source, outputs) == (100_000, 100_000, 100_000, 0)
    counts = task(pg_harness, "seg1").counts
    sizes = [counts[f"seg1_{n}"] for n in ("fr", "quarter", "tenK", "more", "remainder")]
    assert sizes[:3] == [20_000, 25_000, 10_000]
    assert sizes[3] + sizes[4] == 45_000
    # `more` (at most 30,000) takes every FR record the earlier segments left.
    assert _countries(pg_harness, "e4") == {"FR": sizes[3]}
    assert _countries(pg_harness, "e5") == {"DE": sizes[4]}
    assert task(pg_harness, "seg2").counts["seg2_test"] == 10_000


def _countries(harness: Harness, end: str) -> dict[str, int]:
    table = populations.as_table(next(iter(task(harness, end).inputs.values())))
    profile = marketing.profile
    rows = harness.query(
        select(profile.c.country, func.count())
        .select_from(table.join(profile, profile.c.id == table.c.id))
        .group_by(profile.c.country)
    )
    return {country: n for country, n in rows}
