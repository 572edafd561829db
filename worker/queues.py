"""Celery queue names: one per activity family, plus the control queue (commands, tick)."""

from __future__ import annotations

from collections.abc import Iterable

FAMILIES = ("flow", "targeting", "data", "channel", "human")
CONTROL_QUEUE = "carillon.control"
CHANNEL_QUEUE = "carillon.channel"
#: The channel family's second queue: batches of one delivery, sent by any pool process.
BATCH_QUEUE = "carillon.channel.batch"
QUEUES = (*(f"carillon.{family}" for family in FAMILIES), BATCH_QUEUE, CONTROL_QUEUE)
#: Names an error message repeats at most (a hostile `-Q` must not flood the terminal).
_SHOWN = 5


def worker_queues(names: Iterable[str]) -> tuple[str, ...]:
    """The queues a worker told to consume `names` takes: all of them when none is named.

    A worker of the channel family also takes that family's delivery batches: a spread
    delivery parks until its batches are sent, and would wait forever on a queue no worker
    reads. ValueError naming the unknown queues (a typo would make a worker that takes
    nothing).
    """
    chosen = [name.strip() for name in names if name.strip()]
    if not chosen:
        return QUEUES
    unknown = [name for name in dict.fromkeys(chosen) if name not in QUEUES]
    if unknown:
        shown = ", ".join(repr(name[:60]) for name in unknown[:_SHOWN])
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        raise ValueError(f"unknown queue {shown}{more}: the queues are {', '.join(QUEUES)}")
    if CHANNEL_QUEUE in chosen:
        chosen.append(BATCH_QUEUE)
    return tuple(dict.fromkeys(chosen))
