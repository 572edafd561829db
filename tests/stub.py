"""A stub dispatcher that runs compiled canvas in-process with Celery's chain/group/chord rules."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from celery import group
from celery.canvas import Signature
from celery.canvas import _chain as chain
from celery.canvas import _chord as chord

from worker import canvas
from worker.definitions import Definition
from worker.engine import Engine
from worker.models import new_id


class StubDispatcher:
    """Queues published segments; `drain()` executes them like a worker would, in order."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.queue: deque[Signature] = deque()
        self.published: list[Signature] = []
        self.command_requests: list[int] = []

    def dispatch(
        self,
        definition: Definition,
        rows: list[tuple[str, str]],
        seeds: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        for activity, task_id in rows:
            seed = (seeds or {}).get(task_id)
            segment = canvas.compile_segment(definition, activity, task_id, new_id, seed)
            self.published.append(segment)
            self.queue.append(segment)

    def apply_commands(self, workflow_id: int) -> None:
        self.command_requests.append(workflow_id)

    def drain(self, limit: int = 10_000) -> int:
        """Run queued segments (and what they publish) until none is left; returns runs."""
        runs = 0
        while self.queue and runs < limit:
            runs += self._run(self.queue.popleft())[2]
        return runs

    def _run(self, sig: Any, seeds: dict[str, Any] | None = None) -> tuple[bool, bool, int]:
        """(the last task ran, the chain may continue, number of tasks run).

        As a worker does, a chain link gets the seed its predecessor left for it, if the
        link right after that predecessor is a plain run (worker.canvas.seed_next).
        """
        assert self.engine is not None
        if isinstance(sig, chord):
            header = [self._run(h) for h in sig.tasks]
            count = sum(h[2] for h in header)
            if all(h[0] for h in header):
                count += self._run(sig.body)[2]
            return True, True, count
        if isinstance(sig, group):
            return True, True, sum(self._run(t)[2] for t in sig.tasks)
        if isinstance(sig, chain):
            count = 0
            left: dict[str, Any] = {}
            for index, link in enumerate(sig.tasks):
                ran, more, runs = self._run(link, left)
                count += runs
                if not ran or (not more and index < len(sig.tasks) - 1):
                    return False, False, count
            return True, more, count
        task_id, chained = sig.args
        seed = (seeds or {}).pop(task_id, None) or sig.kwargs.get("seed")
        result = self.engine.run(task_id, chained, seed)
        if seeds is not None:
            seeds.clear()
            seeds.update(result.seeds)
        return True, result.continue_chain, 1
