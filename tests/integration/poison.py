"""A poison activity for the reliability tests: it kills its worker process until fixed.

Loaded by the test's worker with CARILLON_ACTIVITY_MODULES=tests.plugins,tests.integration.poison.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import insert

from tests.plugins import effects
from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.registry import register


@register
class Poison(ActivityType):
    """Writes `<startedDir>/<attempt>`, then `os._exit(137)`s (an OOM kill's status) unless
    `fixedFile` exists; once fixed, records one row in test_effect."""

    name = "poison"
    options = {"startedDir": Option((str,)), "fixedFile": Option((str,))}

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        Path(options["startedDir"], str(ctx.attempt)).write_text(str(os.getpid()))
        if not Path(options["fixedFile"]).exists():
            os._exit(137)
        ctx.session.execute(
            insert(effects).values(
                task_id=ctx.task_id,
                activity=ctx.activity.name,
                attempt=ctx.attempt,
                pid=os.getpid(),
            )
        )
        return Outcome()
