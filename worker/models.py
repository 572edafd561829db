"""ORM models: organizations, credentials, workflows, versions, jobs, tasks, logs, commands."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime, utcnow


def new_id() -> str:
    return str(uuid.uuid4())


class Organization(Base):
    __tablename__ = "organization"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key and its bearer token, both stored hashed."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organization.id"))
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Workflow(Base):
    """A workflow of one organization: its state and the version it runs."""

    __tablename__ = "workflow"
    # Ids are never reused (SQLite would reuse a deleted one): engines cache definitions by id.
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        # Monitoring: an organization's workflows by state, in name order.
        Index("ix_workflow_org_state_name", "org_id", "state", "name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pkey: Mapped[str] = mapped_column(String(40), unique=True, default=new_id)
    org_id: Mapped[int] = mapped_column(ForeignKey("organization.id"))
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16), default="edition")
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    running_version: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WorkflowVersion(Base):
    """One saved version of a workflow's definition (immutable once written)."""

    __tablename__ = "workflow_version"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One flow of tokens through a workflow: created by a start, a scheduler fire or a trigger."""

    __tablename__ = "job"
    # Monitoring: a workflow's jobs newest first, and its latest one.
    __table_args__ = (Index("ix_job_workflow_created", "workflow_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(16))  # start | signal | scheduler | rerun
    origin_activity: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(255))
    vars: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    """One execution of one activity; its id is the Celery task id."""

    __tablename__ = "task"
    __table_args__ = (
        Index("ix_task_state_due", "state", "due_at"),
        # Monitoring: a workflow's tasks newest first, by state or activity; throughput.
        Index("ix_task_workflow_created", "workflow_id", "created_at", "id"),
        Index("ix_task_workflow_state_created", "workflow_id", "state", "created_at"),
        Index("ix_task_workflow_activity_created", "workflow_id", "activity", "created_at"),
        # Partial: only finished_at ranges use it, and new rows (every hop) need no entry.
        Index(
            "ix_task_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(36))
    activity: Mapped[str] = mapped_column(String(64))
    activity_type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    #: Executions so far; also the fencing token of the current one.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    vars: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outlets: Mapped[list[str] | None] = mapped_column(JSON)
    #: What the inbound transitions carry (populations, files), by producing activity.
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Progress of long work: {"done", "total", "unit"}, written by the heartbeat.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Why the task waits, is held or was aborted, in words for humans.
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Next execution of a waiting timer (wait, scheduler); None for signals.
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Fires so far (scheduler) or last accepted trigger (signal).
    fired: Mapped[int] = mapped_column(Integer, default=0)
    last_trigger_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    worker: Mapped[str | None] = mapped_column(String(255))
    #: Attempts not counted against CARILLON_MAX_ATTEMPTS: `attempt` when an operator last
    #: requeued it. The fencing token (`attempt`) itself never goes back.
    attempt_base: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class JoinArrival(Base):
    """A branch that reached an and-join; the join starts when every inbound branch arrived."""

    __tablename__ = "join_arrival"
    # One arrival per branch task and join: a task may lead to several joins.
    __table_args__ = (UniqueConstraint("from_task_id", "join_activity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    join_activity: Mapped[str] = mapped_column(String(64))
    from_activity: Mapped[str] = mapped_column(String(64))
    from_task_id: Mapped[str] = mapped_column(String(36))
    vars: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    consumed_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Trigger(Base):
    """An accepted external-signal trigger; queued while its workflow is paused."""

    __tablename__ = "trigger"
    # Monitoring's throughput, and the engine's "last trigger of this signal" check.
    __table_args__ = (
        Index("ix_trigger_created", "created_at"),
        Index("ix_trigger_workflow_activity", "workflow_id", "activity", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    activity: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(255))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))  # queued | accepted | dropped
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Command(Base):
    """An execution command, recorded first and applied asynchronously in order."""

    __tablename__ = "command"

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|applied|refused
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StateEvent(Base):
    """One state change of a workflow or task, written with the change itself."""

    __tablename__ = "state_event"
    __table_args__ = (Index("ix_state_event_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(Integer, index=True)
    entity: Mapped[str] = mapped_column(String(8))  # workflow | task
    entity_id: Mapped[str] = mapped_column(String(36))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogLine(Base):
    """A log line of a workflow, written by its tasks and by the engine."""

    __tablename__ = "log_line"
    __table_args__ = (
        Index("ix_log_line_workflow", "workflow_id", "id"),
        # Monitoring: a workflow's log filtered by level, or one task's lines.
        Index("ix_log_line_workflow_level", "workflow_id", "level", "id"),
        Index("ix_log_line_task", "task_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(36))
    task_id: Mapped[str | None] = mapped_column(String(36))
    activity: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MetricCounter(Base):
    """A Prometheus counter kept in the database, so every API process reports one figure."""

    __tablename__ = "metric_counter"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotencyKey(Base):
    """A client's Idempotency-Key and the response it got, replayed for 24 hours."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_expires", "expires_at"),)

    org_id: Mapped[int] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of the method, path and canonical JSON body the key was first used with.
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # processing | done
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[Any | None] = mapped_column(JSON)
    location: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class DeliveryBatch(Base):
    """A slice of one delivery's log rows (by id range) that one pool process sends.

    A delivery's coordinator task cuts its pending rows into batches; batch tasks claim
    them (`FOR UPDATE SKIP LOCKED`) under a lease, `attempt` counting the claims: the
    batch's rows are marked in flight with `marker(id, attempt)`, never a task attempt.
    """

    __tablename__ = "delivery_batch"
    __table_args__ = (
        UniqueConstraint("delivery_id", "seq"),
        Index("ix_delivery_batch_delivery_state", "delivery_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    #: The delivery_log ids of the batch: first_id <= id <= last_id.
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    #: pending (no live claim), running (claimed, lease_until in the future), done, failed
    #: (its connector failed: the coordinator fails with `error` and sets it pending again).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: hostname:pid of the process holding (or that last held) the batch.
    owner: Mapped[str | None] = mapped_column(String(255))
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
