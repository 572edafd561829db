"""Activity types for the fault scenarios, loaded with CARILLON_ACTIVITY_MODULES.

`crash` is F19's poison: it kills its own worker process (exit 137, as the OOM killer
would) every time it runs, so only the attempt cap can stop it.
"""

from __future__ import annotations

import os

from worker.activities.base import ActivityType, Context, Outcome
from worker.registry import register


@register
class Crash(ActivityType):
    """Kills the process running it, every time."""

    name = "crash"

    def run(self, ctx: Context) -> Outcome:
        os._exit(137)
