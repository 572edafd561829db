"""Data activities against raw PostgreSQL: load vs COPY, query + segmentation vs hand-written SQL,
and peak memory for 100,000 vs 1,000,000 profiles.

Activities run through the engine in this process (the stub dispatcher executes the canvas
the way a worker does, minus the broker), on the database of CARILLON_DATABASE_URL (the
Makefile points it at the local PostgreSQL). Activity times come from the task rows
(started_at -> finished_at); baselines run in the same script on the same data:

- load: a `loadFile` of an N-line CSV vs `COPY ... FROM STDIN` of the same file into an
  unlogged table with the same typed columns. load_ratio = COPY's time / ours (goal >= 0.5:
  we load at half COPY's speed or better).
- query + segmentation over N profiles vs the statements a DBA would write (CREATE
  UNLOGGED TABLE AS SELECT ... for the query, then each segment as ORDER BY id LIMIT/OFFSET).
  query_ratio = ours / SQL's (goal <= 1.3). Median of --repeat runs each.
- memory: a child process per size loads, upserts, queries, segments and extracts
  100,000 then 1,000,000 profiles; memory_ratio = peak RSS at 1M / at 100k (goal: flat).

    python bench/data.py [--rows 1000000] [--small 100000] [--repeat 3] [--skip-memory]

The last line is JSON: {"load_ratio", "query_ratio", "memory_ratio", ...figures}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_database

COUNTRIES = ("FR", "FR", "FR", "DE", "DE", "ES", "IT", "BE")
CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Roma", "Bruxelles")
COLUMNS = [
    {"name": "crmId", "type": "string", "required": True},
    {"name": "email", "type": "string"},
    {"name": "firstName", "type": "string"},
    {"name": "lastName", "type": "string"},
    {"name": "birthDate", "type": "date"},
    {"name": "country", "type": "string"},
    {"name": "city", "type": "string"},
    {"name": "points", "type": "integer"},
]
QUERY_FILTER = {
    "all": [
        {"field": "country", "op": "eq", "value": "FR"},
        {"field": "birthDate", "op": "ge", "value": "1970-01-01"},
    ]
}


def write_csv(path: Path, rows: int, seed: int = 11) -> Path:
    """An N-line CSV (plus header) with every column type loadFile handles."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        out.write("crmId,email,firstName,lastName,birthDate,country,city,points\n")
        batch: list[str] = []
        for number in range(rows):
            batch.append(
                f"C{number},user{number}@example.com,First{number % 977},Last{number % 1013},"
                f"{1950 + number % 55}-{1 + number % 12:02d}-{1 + number % 28:02d},"
                f"{rng.choice(COUNTRIES)},{rng.choice(CITIES)},{number % 10_000}\n"
            )
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return path


class DataBench:
    """An engine on the benchmark database with the in-process stub dispatcher."""

    def __init__(self, home: Path) -> None:
        os.environ.setdefault("CARILLON_HOME", str(home))
        os.environ["CARILLON_SIGNAL_MIN_INTERVAL"] = "0"
        from tests.stub import StubDispatcher
        from worker import catalog, schema
        from worker.config import Settings
        from worker.db import make_engine, make_session_factory
        from worker.engine import Engine

        self.settings = Settings.from_env()
        ensure_database(self.settings.database_url)
        self.db = make_engine(self.settings.database_url)
        schema.upgrade(self.db)
        self.sessions = make_session_factory(self.db)
        self.stub = StubDispatcher()
        self.engine = Engine(self.settings, self.sessions, self.stub, worker_name="bench")
        self.stub.engine = self.engine
        self.org_name = f"bench_{uuid.uuid4().hex[:8]}"
        with self.sessions() as s, s.begin():
            self.org_id = catalog.ensure_org(s, self.org_name).id

    def run(self, body: dict[str, Any]) -> dict[str, float]:
        """Start a workflow, run it to the end; returns each activity's seconds."""
        from sqlalchemy import select

        from worker import catalog
        from worker.models import Task, Workflow

        body = {**body, "id": f"{body['id']}{uuid.uuid4().hex[:6]}"}
        with self.sessions() as s, s.begin():
            org = catalog.ensure_org(s, self.org_name)
            name = catalog.save_definition(s, org, body).name
        self.engine.command(None, name, "start")
        self.stub.drain()
        with self.sessions() as s:
            state = s.scalar(select(Workflow.state).where(Workflow.name == name))
            rows = s.execute(
                select(Task.activity, Task.state, Task.started_at, Task.finished_at, Task.error)
                .join(Workflow, Workflow.id == Task.workflow_id)
                .where(Workflow.name == name)
            ).all()
        failed = [f"{r.activity}: {r.error}" for r in rows if r.state == "failed"]
        if state != "finished" or failed:
            raise SystemExit(f"workflow {name} ended {state}: {failed}")
        return {
            r.activity: (r.finished_at - r.started_at).total_seconds()
            for r in rows
            if r.started_at and r.finished_at
        }

    def raw(self, sql: str, params: dict[str, Any] | None = None) -> float:
        """Run hand-written SQL in one transaction; returns seconds."""
        from sqlalchemy import text

        started = time.perf_counter()
        with self.db.begin() as connection:
            connection.execute(text(sql), params or {})
        return time.perf_counter() - started

    def copy(self, path: Path, table: str) -> float:
        """Raw COPY of the CSV into an unlogged table with the same typed columns."""
        self.raw(
            f"CREATE UNLOGGED TABLE {table} (crm_id varchar(255), email varchar(255), "
            "first_name varchar(255), last_name varchar(255), birth_date date, "
            "country varchar(255), city varchar(255), points bigint)"
        )
        connection = self.db.raw_connection()
        try:
            cursor = connection.cursor()
            started = time.perf_counter()
            with path.open(encoding="utf-8") as source:
                cursor.copy_expert(
                    f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)", source
                )
            connection.commit()
            return time.perf_counter() - started
        finally:
            connection.close()

    def seed_profiles(self, rows: int) -> float:
        return self.raw(
            "INSERT INTO profile (org_id, email, first_name, birth_date, country, created, "
            "last_modified) SELECT :org, 'p' || g || '@example.com', 'P' || g, "
            "DATE '1950-01-01' + (g % 20000), "
            "(ARRAY['FR','FR','FR','DE','DE','ES','IT','BE'])[1 + g % 8], now(), now() "
            "FROM generate_series(1, :rows) AS g",
            {"org": self.org_id, "rows": rows},
        )

    def drop_tables(self, names: list[str]) -> None:
        for name in names:
            self.raw(f"DROP TABLE IF EXISTS {name}")


def load_workflow(file_name: str) -> dict[str, Any]:
    return {
        "id": "benchLoad",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "transferFile1"}},
            {
                "name": "transferFile1",
                "type": "transferFile",
                "inboxFile": file_name,
                "transitions": {"done": "loadFile1"},
            },
            {
                "name": "loadFile1",
                "type": "loadFile",
                "columns": COLUMNS,
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }


def targeting_workflow() -> dict[str, Any]:
    return {
        "id": "benchTarget",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
            {
                "name": "query1",
                "type": "query",
                "filter": QUERY_FILTER,
                "transitions": {"result": "segmentation1"},
            },
            {
                "name": "segmentation1",
                "type": "segmentation",
                "segments": [{"name": "testGroup", "percent": 10}, {"name": "rest", "percent": 90}],
                "transitions": {"testGroup": "end1", "rest": "end2"},
            },
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }


def hand_written_targeting(bench: DataBench, suffix: str) -> float:
    """The query and the two segments as a DBA would write them, in one transaction each."""
    query = f"bq_{suffix}"
    seconds = bench.raw(
        f"CREATE UNLOGGED TABLE {query} AS SELECT id FROM profile "
        "WHERE org_id = :org AND country = 'FR' AND birth_date >= DATE '1970-01-01'",
        {"org": bench.org_id},
    )
    from sqlalchemy import text

    with bench.db.connect() as connection:
        total = connection.execute(text(f"SELECT count(*) FROM {query}")).scalar_one()
    first = total * 10 // 100
    second = total * 90 // 100
    seconds += bench.raw(
        f"CREATE UNLOGGED TABLE bs1_{suffix} AS SELECT id FROM {query} ORDER BY id LIMIT :n",
        {"n": first},
    )
    seconds += bench.raw(
        f"CREATE UNLOGGED TABLE bs2_{suffix} AS SELECT id FROM {query} ORDER BY id "
        "OFFSET :skip LIMIT :n",
        {"skip": first, "n": second},
    )
    bench.drop_tables([query, f"bs1_{suffix}", f"bs2_{suffix}"])
    return seconds


def memory_workflow(file_name: str) -> dict[str, Any]:
    """Everything a data campaign does, on one file: for the memory child."""
    start, transfer, load, _end = load_workflow(file_name)["activities"]
    return {
        "id": "benchMemory",
        "activities": [
            start,
            transfer,
            {**load, "transitions": {"done": "updateData1"}},
            {
                "name": "updateData1",
                "type": "updateData",
                "operation": "upsert",
                "key": ["crmId"],
                "mapping": {
                    "crmId": "crmId",
                    "email": "email",
                    "firstName": "firstName",
                    "lastName": "lastName",
                    "birthDate": "birthDate",
                    "country": "country",
                    "city": "city",
                },
                "transitions": {"done": "query1"},
            },
            {
                "name": "query1",
                "type": "query",
                "filter": QUERY_FILTER,
                "transitions": {"result": "segmentation1"},
            },
            {
                "name": "segmentation1",
                "type": "segmentation",
                "segments": [{"name": "testGroup", "percent": 10}, {"name": "rest", "percent": 90}],
                "transitions": {"testGroup": "extractFile1", "rest": "end2"},
            },
            {
                "name": "extractFile1",
                "type": "extractFile",
                "columns": [
                    {"name": "email", "field": "email"},
                    {"name": "firstName", "field": "firstName"},
                ],
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")


def memory_child(rows: int) -> None:
    """Run the whole data workflow on `rows` profiles; print JSON with the peak RSS."""
    home = Path(tempfile.mkdtemp(prefix="carillon-bench-mem-"))
    bench = DataBench(home)
    baseline = peak_rss_kib()
    bench.settings.inbox.mkdir(parents=True, exist_ok=True)
    write_csv(bench.settings.inbox / "mem.csv", rows)
    seconds = bench.run(memory_workflow("mem.csv"))
    print(
        json.dumps(
            {"rows": rows, "peak_kib": peak_rss_kib(), "start_kib": baseline, "seconds": seconds}
        )
    )


def measure_memory(rows: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(rows)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CARILLON_HOME": tempfile.mkdtemp(prefix="carillon-bench-mem-")},
    )
    if done.returncode != 0:
        raise SystemExit(f"memory child for {rows} rows failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="big size (1,000,000)")
    parser.add_argument("--small", type=int, default=100_000, help="small size (100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, median (3)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory children")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0

    home = Path(tempfile.mkdtemp(prefix="carillon-bench-data-"))
    bench = DataBench(home)
    print(f"database {bench.settings.database_url}")
    inbox = bench.settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    source = write_csv(home / "profiles.csv", args.rows)
    print(f"generated {args.rows:,} lines ({source.stat().st_size / 1e6:.0f} MB)")

    copy_times, load_times = [], []
    for run in range(args.repeat):
        copy_times.append(bench.copy(source, f"bench_copy_{run}"))
        bench.drop_tables([f"bench_copy_{run}"])
        name = f"load{run}.csv"
        (inbox / name).write_bytes(source.read_bytes())
        load_times.append(bench.run(load_workflow(name))["loadFile1"])
        print(f"  run {run + 1}: COPY {copy_times[-1]:.2f} s, loadFile {load_times[-1]:.2f} s")
    copy_s, load_s = statistics.median(copy_times), statistics.median(load_times)
    print(
        f"load {args.rows:,} lines: loadFile {load_s:.2f} s ({args.rows / load_s:,.0f} rows/s), "
        f"COPY {copy_s:.2f} s ({args.rows / copy_s:,.0f} rows/s)"
    )

    seeded = bench.seed_profiles(args.rows)
    bench.raw("ANALYZE profile")
    print(f"seeded {args.rows:,} profiles in {seeded:.1f} s")
    ours, theirs = [], []
    for run in range(args.repeat):
        times = bench.run(targeting_workflow())
        ours.append(times["query1"] + times["segmentation1"])
        theirs.append(hand_written_targeting(bench, f"{os.getpid()}_{run}"))
        print(
            f"  run {run + 1}: query {times['query1']:.2f} s + segmentation "
            f"{times['segmentation1']:.2f} s = {ours[-1]:.2f} s; "
            f"hand-written SQL {theirs[-1]:.2f} s"
        )
    ours_s, sql_s = statistics.median(ours), statistics.median(theirs)
    print(f"query + segmentation over {args.rows:,} profiles: {ours_s:.2f} s vs SQL {sql_s:.2f} s")

    figures: dict[str, Any] = {
        "load_ratio": round(copy_s / load_s, 3),
        "query_ratio": round(ours_s / sql_s, 3),
        "memory_ratio": None,
        "rows": args.rows,
        "load_s": round(load_s, 3),
        "copy_s": round(copy_s, 3),
        "targeting_s": round(ours_s, 3),
        "sql_s": round(sql_s, 3),
    }
    if not args.skip_memory:
        small = measure_memory(args.small)
        big = measure_memory(args.rows)
        for result in (small, big):
            print(
                f"memory with {result['rows']:,} profiles: "
                f"peak RSS {result['peak_kib'] / 1024:.0f} MiB "
                f"(start {result['start_kib'] / 1024:.0f} MiB)"
            )
        figures["memory_ratio"] = round(big["peak_kib"] / small["peak_kib"], 3)
        figures["peak_mib_small"] = round(small["peak_kib"] / 1024, 1)
        figures["peak_mib_big"] = round(big["peak_kib"] / 1024, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
