"""Activity types for tests and benchmarks, loaded with CARILLON_ACTIVITY_MODULES=tests.plugins."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert

from worker.activities.base import Activity, ActivityType, Context, Option, Outcome
from worker.errors import ActivityError
from worker.registry import register

metadata = MetaData()
#: One row per *committed* execution of an `effect` activity: the ground truth for "once".
effects = Table(
    "test_effect",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", String(36), nullable=False),
    Column("activity", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine)


@register
class Noop(ActivityType):
    """Does nothing: the cheapest possible activity (benchmarks, canvas shapes)."""

    name = "noop"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


@register
class Effect(ActivityType):
    """Sleeps, optionally fails until a file exists, then records one row in test_effect."""

    name = "effect"
    options = {
        "seconds": Option((int, float)),
        "failUnlessFile": Option((str,)),
        "startedDir": Option((str,)),
    }

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"done"})

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        started = options.get("startedDir")
        if started:
            Path(started, f"{ctx.activity.name}.{ctx.attempt}").write_text(str(os.getpid()))
        flag = options.get("failUnlessFile")
        if flag and not Path(flag).exists():
            raise ActivityError(f"flag file {flag} is missing")
        time.sleep(float(options.get("seconds", 0)))
        ctx.session.execute(
            insert(effects).values(
                task_id=ctx.task_id,
                activity=ctx.activity.name,
                attempt=ctx.attempt,
                pid=os.getpid(),
            )
        )
        ctx.log(f"effect recorded by pid {os.getpid()}")
        return Outcome(vars={f"{ctx.activity.name}Done": True})


@register
class DataEffect(Effect):
    """An `effect` that counts as a data activity (CARILLON_MAX_RUNNING_WORKFLOWS)."""

    name = "dataEffect"
    family = "data"
    data = True


@register
class Emit(ActivityType):
    """Carries `{"kind": "file", "path": <its name>}` on `done`, to test input plumbing."""

    name = "emit"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome(outputs={"done": {"kind": "file", "path": ctx.activity.name}})


@register
class Collect(ActivityType):
    """Copies what its inbound transitions carried into vars (`seen.<its name>`)."""

    name = "collect"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome(vars={f"seen_{ctx.activity.name}": sorted(ctx.inputs)})


@register
class EmitTwo(ActivityType):
    """Fires outlets `a` and `b`, each carrying its own file descriptor."""

    name = "emitTwo"
    quick = True
    pure = True

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"a", "b"})

    def run(self, ctx: Context) -> Outcome:
        return Outcome(
            outlets=("a", "b"),
            outputs={"a": {"kind": "file", "path": "a"}, "b": {"kind": "file", "path": "b"}},
        )
