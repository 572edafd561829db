"""mobileAppOptOutMgt: apply the push opt-outs the push provider reports.

The provider's feedback (devices that unsubscribed or whose token died) arrives as JSON lines
`{"pushToken": ..., "reason": "optOut"|"unregistered"}` in CARILLON_HOME/feedback/push.jsonl,
where the local push connector and any provider bridge append them. The pointer is the byte
offset of the last complete line applied, moved in the run's transaction: a crash replays the
same lines, and applying an opt-out twice changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Outcome
from worker.db import utcnow
from worker.marketing import profile
from worker.registry import register
from worker.technical.indicators import read_pointer, write_pointer

#: Lines applied per run at most (the rest waits for the next run).
MAX_LINES = 500_000
CHUNK = 5_000
POINTER = "mobileAppOptOutMgt"


def feedback_file(home: Path) -> Path:
    return home / "feedback" / "push.jsonl"


def apply_feedback(s: Session, path: Path) -> tuple[int, int, int]:
    """(lines read, profiles opted out, lines ignored) from the pointer on."""
    offset = read_pointer(s, POINTER)
    if not path.exists() or path.stat().st_size <= offset:
        return 0, 0, 0
    tokens: list[str] = []
    read = ignored = changed = 0
    with path.open("rb") as lines:
        lines.seek(offset)
        for raw in lines:
            if not raw.endswith(b"\n") or read >= MAX_LINES:
                break  # a line still being written, or enough for this run
            offset += len(raw)
            read += 1
            try:
                entry = json.loads(raw)
                token = entry["pushToken"]
                valid = isinstance(token, str) and 0 < len(token) <= 255
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                ignored += 1
                continue
            tokens.append(token)
            if len(tokens) >= CHUNK:
                changed += _opt_out(s, tokens)
                tokens = []
    changed += _opt_out(s, tokens)
    write_pointer(s, POINTER, offset)
    return read, changed, ignored


def _opt_out(s: Session, tokens: list[str]) -> int:
    if not tokens:
        return 0
    result = s.execute(
        update(profile)
        .where(profile.c.pushToken.in_(set(tokens)), profile.c.pushOptOut.is_(False))
        .values(pushOptOut=True, lastModified=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


@register
class MobileAppOptOutMgt(ActivityType):
    """Marks the profiles whose device opted out of push notifications."""

    name = "mobileAppOptOutMgt"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        read, changed, ignored = apply_feedback(ctx.session, feedback_file(Path(ctx.settings.home)))
        ctx.log(
            f"{read:,} push feedback line(s) read, {changed:,} profile(s) opted out"
            + (f", {ignored:,} unreadable line(s) ignored" if ignored else "")
        )
        return Outcome(counts={ctx.activity.name: changed})
