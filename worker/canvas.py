"""Pure compilation of a graph segment into Celery canvas: chain, group, chord of run_activity.

A segment starts at a task row that already exists (committed as pending) and follows the
graph while the path is known before running: a sequence becomes a `chain`, a fork a
`group`, a fork whose branches all meet at one and-join a `chord` whose callback is the join.
It stops before anything decided at run time (test outcomes, waits, signals, joins reached
by other paths), and after MAX_LINKS links of a sequence; the engine continues there with a
new segment.

Each link carries the ids its successors will get (`chained`), so that the task that runs
first can commit its successors' rows, under those ids, before Celery publishes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import chain, chord, group, signature
from celery.canvas import Signature

from worker.definitions import Definition
from worker.sender import send_link

RUN_ACTIVITY = "carillon.run_activity"
IdFactory = Callable[[], str]
#: Most links of a sequence in one segment. Celery's chain sends every remaining link in each
#: message, so one chain for a sequence of n activities costs O(n^2) bytes of messages (the
#: first of a 10-activity chain was 4.3 KB), which every hop's worker decodes and encodes
#: again. The segment's last task continues with a new segment, as after a test or a wait.
#: A fork is never cut off from its branches: its group or chord stays in the segment.
MAX_LINKS = 3


def queue_for(definition: Definition, activity: str) -> str:
    """Queue of an activity: one per family, so operators can scale families apart."""
    return f"carillon.{definition.type_of(activity).family}"


def link(
    definition: Definition,
    activity: str,
    task_id: str,
    chained: dict[str, str] | None = None,
    *,
    keep_result: bool = False,
) -> Signature:
    """One run_activity signature; immutable, with the task row's id as Celery task id."""
    options: dict[str, object] = {
        "task_id": task_id,
        "queue": queue_for(definition, activity),
        # What Flower and the logs show of the arguments, written here: Celery would build it
        # with its saferepr on every publish (~0.1 ms for a seeded message), and it must not
        # show a seed's vars (profile data) anyway.
        "argsrepr": repr((task_id, chained or {})),
        "kwargsrepr": "{}",
    }
    if keep_result:
        # Chord headers must report to the result backend; nothing else needs results.
        options["ignore_result"] = False
    return signature(RUN_ACTIVITY, args=(task_id, chained or {}), options=options, immutable=True)


def static_successors(definition: Definition, activity: str) -> list[str] | None:
    """Successors known before running, or None when the run decides (tests, listeners)."""
    kind = definition.type_of(activity)
    if kind.deciding or kind.listener:
        return None
    act = definition.activity(activity)
    found = list(act.transitions.get("done", ()))
    jump = kind.jump_target(act)
    if jump:
        found.append(jump)
    return found


def chainable(definition: Definition, activity: str) -> bool:
    """Whether a successor can be a link of a pre-built canvas (it runs as soon as it exists)."""
    kind = definition.type_of(activity)
    act = definition.activity(activity)
    return not (
        kind.joins or kind.listener or kind.breaks_loops or kind.entry or act.execution != "normal"
    )


def compile_segment(
    definition: Definition,
    activity: str,
    task_id: str,
    new_id: IdFactory,
    seed: Mapping[str, Any] | None = None,
) -> Signature:
    """The canvas that runs `activity` (row `task_id`) and everything statically after it;
    its first run carries `seed` (worker.hop) when given."""
    return _as_canvas(segment_links(definition, activity, task_id, new_id, seed))


def _as_canvas(links: list[Signature]) -> Signature:
    """A segment's links as one signature: the link alone, or Celery's chain of them."""
    return links[0] if len(links) == 1 else chain(*links)


def segment_links(
    definition: Definition,
    activity: str,
    task_id: str,
    new_id: IdFactory,
    seed: Mapping[str, Any] | None = None,
) -> list[Signature]:
    """compile_segment's links in order, before Celery's `chain` takes them (only the last
    may be a group or a chord)."""
    links: list[Signature] = []
    current, current_id = activity, task_id
    while True:
        successors = static_successors(definition, current)
        if not successors or not all(chainable(definition, s) for s in successors):
            links.append(link(definition, current, current_id))
            break
        if len(successors) == 1 and len(links) >= MAX_LINKS - 1:
            links.append(link(definition, current, current_id))  # publishes the next segment
            break
        ids = {s: new_id() for s in successors}
        links.append(link(definition, current, current_id, ids))
        if len(successors) == 1:
            current, current_id = successors[0], ids[successors[0]]
            continue
        links.append(_fork(definition, successors, ids, new_id))
        break
    if seed is not None:
        links[0].kwargs["seed"] = dict(seed)
        links[0].options["kwargsrepr"] = seed_repr(seed)
    return links


def publish(links: list[Signature], producer: Any = None, *, batched: bool = False) -> None:
    """Publish a segment's links (segment_links) as Celery's chain would.

    A plain sequence goes out as `chain.apply_async` sends it, its first link's message
    carrying the others as its `chain`, without what `chain` does first: a deep copy of every
    link (twice: when built, when run) and an id, root and reply queue frozen into each, which
    the worker sets again on every hop anyway. That was ~0.6 ms of a start's or a trigger's
    ~1 ms publication (10 links). A group or a chord goes through `chain`.

    `producer`: the kombu producer to publish a plain sequence through (worker.follow and
    the dispatcher publish in a batch on it); a group or a chord never takes it (forks()).
    The first link goes out through Celery's message builder and sender (worker.sender);
    `batched`: `producer` is inside a publish batch (send_link).
    """
    if forks(links):
        _as_canvas(links).apply_async()
        return
    first, *rest = links
    app = first.app
    with app.producer_or_acquire(producer) as acquired:
        # The next link last, as Celery keeps them.
        send_link(app, first, acquired, chain=rest[::-1] or None, batched=batched)


def forks(links: list[Signature]) -> bool:
    """Whether a segment's links hold a group or a chord: Celery publishes their members
    through producers of its own, so they cannot be held in a caller's batch."""
    return any(isinstance(link, group | chord) for link in links)


def _fork(
    definition: Definition, heads: list[str], ids: dict[str, str], new_id: IdFactory
) -> Signature:
    """Branches of a fork: a chord when they all meet at one and-join, else a group."""
    paths = [_linear_path(definition, head) for head in heads]
    joins = {path[-1][1] if path else None for path in paths}
    join = next(iter(joins)) if len(joins) == 1 else None
    if join is not None and definition.inbound_counts()[join] == len(heads):
        join_id = new_id()
        branches = []
        for head, path in zip(heads, paths, strict=True):
            branch_ids = [ids[head]] + [new_id() for _ in path[1:]]
            branch = []
            for index, (name, _next) in enumerate(path):
                is_last = index == len(path) - 1
                chained = (
                    {join: join_id} if is_last else {path[index + 1][0]: branch_ids[index + 1]}
                )
                branch.append(
                    link(definition, name, branch_ids[index], chained, keep_result=is_last)
                )
            branches.append(branch[0] if len(branch) == 1 else chain(*branch))
        return chord(branches, compile_segment(definition, join, join_id, new_id))
    return group([compile_segment(definition, head, ids[head], new_id) for head in heads])


def _linear_path(definition: Definition, head: str) -> list[tuple[str, str | None]]:
    """[(activity, next)] from `head` along single static successors until an and-join.

    Empty when the branch does anything else (decides, forks, waits) before a join.
    """
    path: list[tuple[str, str | None]] = []
    current = head
    for _ in range(len(definition.activities)):
        successors = static_successors(definition, current)
        if not successors or len(successors) != 1:
            return []
        nxt = successors[0]
        path.append((current, nxt))
        if definition.type_of(nxt).joins:
            return path
        if not chainable(definition, nxt):
            return []
        current = nxt
    return []


def seed_next(remaining: list[Any] | None, seeds: Mapping[str, dict[str, Any]]) -> None:
    """Give the chain's next link the seed (worker.hop) of the task it runs, if any.

    While a chain runs, Celery keeps its remaining links in the task's `request.chain`,
    as signature dicts, the next one last; it publishes that one once the task returns.
    """
    if not remaining:
        return
    following = seeded_link(remaining[-1], seeds)
    if following is not None:
        remaining[-1] = following


def seeded_link(link: Any, seeds: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A chain link (a signature dict) of run_activity with the seed of the task it runs,
    if `seeds` has one (a copy: `link` is left as it is); None for any other link (a group,
    a chord, another task)."""
    if not isinstance(link, dict) or link.get("task") != RUN_ACTIVITY:
        return None
    args = link.get("args") or ()
    if not (args and isinstance(args[0], str) and args[0] in seeds):
        return dict(link)
    seed = seeds[args[0]]
    return {
        **link,
        "kwargs": {**(link.get("kwargs") or {}), "seed": seed},
        "options": {**(link.get("options") or {}), "kwargsrepr": seed_repr(seed)},
    }


def seed_repr(seed: Mapping[str, Any]) -> str:
    """A seed as Flower and the logs show it: which row, never its vars."""
    return (
        f"{{'seed': <{seed.get('activity')} of workflow {seed.get('workflow_id')} "
        f"v{seed.get('version')}, job {seed.get('job_id')}>}}"
    )
