"""schemathesis hooks for F16c: each generated `Idempotency-Key` is made fresh per request.

The API replays a key's first response, and refuses the same key with another body (422,
`idempotencyKeyReused`): a rule of state no schema can state, that two generated requests
sharing a short key (`0`) would meet. A printable key gets a per-request suffix (still
printable, at most 255 characters); a key the schema calls invalid is sent unchanged, so
its 400 stays tested. Replays and reuse are tested by F13 and tests/unit.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
MAX_KEY = 255
_serial = itertools.count()
_run = os.urandom(4).hex()


def _printable(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY and all(" " <= ch <= "~" for ch in key)


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    headers = case.headers or {}
    key = headers.get(HEADER)
    if isinstance(key, str) and _printable(key):
        suffix = f".{_run}{next(_serial)}"
        headers[HEADER] = key[: MAX_KEY - len(suffix)] + suffix
        case.headers = headers
