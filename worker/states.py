"""Workflow and task states, their named sets and the allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class WorkflowState(StrEnum):
    EDITION = "edition"
    STARTED = "started"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    ERROR = "error"


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    HELD = "held"
    DONE = "done"
    FAILED = "failed"
    #: Its worker was lost CARILLON_MAX_ATTEMPTS times (a poison activity): only an
    #: operator's requeue runs it again; messages for it are acked and ignored.
    DEAD = "dead"
    ABORTED = "aborted"


W, T = WorkflowState, TaskState

#: Workflows that may run tasks, or hold them for later.
OPEN_WORKFLOW_STATES = frozenset({W.STARTED, W.PAUSED, W.ERROR})
#: Tasks that keep a workflow started.
ACTIVE_TASK_STATES = frozenset({T.PENDING, T.RUNNING, T.WAITING, T.HELD})
#: Tasks whose row gets a "why" text (Engine.explain): why waiting, held or not running.
EXPLAINED_TASK_STATES = frozenset({T.PENDING, T.RUNNING, T.WAITING, T.HELD, T.FAILED, T.DEAD})
#: Tasks that will not change again.
READY_TASK_STATES = frozenset({T.DONE, T.ABORTED})
#: Tasks stopped until an operator acts (resume, retry or requeue, skip, stop): neither
#: active nor ready.
STUCK_TASK_STATES = frozenset({T.FAILED, T.DEAD})

WORKFLOW_TRANSITIONS: dict[WorkflowState, frozenset[WorkflowState]] = {
    W.EDITION: frozenset({W.STARTED}),
    W.STARTED: frozenset({W.PAUSED, W.FINISHED, W.STOPPED, W.ERROR}),
    W.PAUSED: frozenset({W.STARTED, W.STOPPED}),
    W.ERROR: frozenset({W.STARTED, W.STOPPED}),
    W.FINISHED: frozenset({W.STARTED}),
    W.STOPPED: frozenset({W.STARTED}),
}

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.PENDING: frozenset({T.RUNNING, T.HELD, T.ABORTED, T.DONE}),
    # running -> pending is the reaper re-enqueuing a task whose worker died;
    # running -> waiting is an activity parking itself until it is woken (engine.wake).
    # running -> dead is the reaper giving up on a task that lost its worker too often.
    T.RUNNING: frozenset({T.DONE, T.FAILED, T.ABORTED, T.PENDING, T.WAITING, T.DEAD}),
    T.WAITING: frozenset({T.PENDING, T.HELD, T.DONE, T.ABORTED}),
    T.HELD: frozenset({T.PENDING, T.ABORTED, T.DONE}),
    # failed -> pending: resume/retry re-executes; failed -> done: skip.
    T.FAILED: frozenset({T.PENDING, T.ABORTED, T.DONE}),
    # dead -> pending: an operator's requeue; dead -> done: skip; dead -> aborted: stop.
    T.DEAD: frozenset({T.PENDING, T.ABORTED, T.DONE}),
    T.DONE: frozenset(),
    T.ABORTED: frozenset(),
}


def workflow_can(from_state: str, to_state: str) -> bool:
    return WorkflowState(to_state) in WORKFLOW_TRANSITIONS[WorkflowState(from_state)]


def task_can(from_state: str, to_state: str) -> bool:
    return TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)]
