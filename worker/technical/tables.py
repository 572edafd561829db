"""Tables of the technical workflows: admins' settings per workflow, and one row per fired slot.

`technical_fire` is what makes a fire single: its primary key is (name, slot), so two beat
processes, or a beat restarted mid-tick, that both send the 04:00 cleanup insert the same row
and only the first insert starts a run (RELIABILITY.md section 3.6, invariant I6).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    true,
)

from worker.db import Base, UTCDateTime, utcnow

metadata = Base.metadata

#: Admins' view of a technical workflow: enabled or not, its schedule and properties.
technical_setting = Table(
    "technical_setting",
    metadata,
    Column("name", String(64), primary_key=True),
    #: A disabled (paused) technical workflow is not fired by beat; "run now" still works.
    Column("enabled", Boolean, nullable=False, server_default=true()),
    #: The schedule in the scheduler activity's format; NULL means beat_schedule.py's default.
    Column("schedule", JSON),
    #: Per-workflow properties (retention days, recipients, connector URLs...).
    Column("properties", JSON, nullable=False, default=dict),
    Column("last_slot", UTCDateTime, key="lastSlot"),
    Column("last_outcome", String(255), nullable=False, server_default="", key="lastOutcome"),
    Column("updated", UTCDateTime, nullable=False, default=utcnow),
)

#: One row per (technical workflow, scheduled instant) that some beat sent.
technical_fire = Table(
    "technical_fire",
    metadata,
    Column("name", String(64), primary_key=True),
    # Plain DateTime in UTC (naive) so the key compares equal on every backend.
    Column("slot", DateTime, primary_key=True),
    Column("fired_at", UTCDateTime, nullable=False, default=utcnow, key="firedAt"),
    #: started, skipped (paused), skipped (still running), manual
    Column("outcome", String(255), nullable=False, server_default=""),
    Column("job_id", String(36), key="jobId"),
    #: How many times beat sent this slot (2 with two beat processes); only the first counts.
    Column("sends", Integer, nullable=False, server_default="1"),
)

#: Where an incremental technical workflow stopped reading a log: moved in the same
#: transaction as the work it covers, so a crash in between replays the batch, never skips it
#: and never counts it twice.
technical_pointer = Table(
    "technical_pointer",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False, server_default="0"),
    Column("updated", UTCDateTime, nullable=False, default=utcnow),
)

#: Daily figures per organization and channel, for reports (reportingAggregates).
reporting_aggregate = Table(
    "reporting_aggregate",
    metadata,
    Column("org_id", ForeignKey("organization.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Column("sent", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("ignored", BigInteger, nullable=False, server_default="0"),
    Column("bounced", BigInteger, nullable=False, server_default="0"),
    Column("opens", BigInteger, nullable=False, server_default="0"),
    Column("clicks", BigInteger, nullable=False, server_default="0"),
    Column("updated", UTCDateTime, nullable=False, default=utcnow),
)

#: How bounce texts are qualified (deliverabilityUpdate loads them; bounces read them).
bounce_rule = Table(
    "bounce_rule",
    metadata,
    Column("pattern", String(255), primary_key=True),
    #: hard, soft, complaint, ignored
    Column("kind", String(16), nullable=False),
    Column("reason", String(64), nullable=False, server_default=""),
    Column("position", Integer, nullable=False, server_default="0"),
    Column("updated", UTCDateTime, nullable=False, default=utcnow),
)

#: Known mail domains, their MX hosts and sending limits (deliverabilityUpdate).
mail_domain = Table(
    "mail_domain",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("mx", JSON, nullable=False, default=list),
    Column("max_connections", Integer, nullable=False, server_default="10", key="maxConnections"),
    Column("updated", UTCDateTime, nullable=False, default=utcnow),
)

#: Planned sends (forecasting): which delivery a scheduled workflow will run, when, to about
#: how many recipients. Recomputed whole by each run.
forecast_log = Table(
    "forecast_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("workflow_id", Integer, nullable=False),
    Column("activity", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("planned_at", UTCDateTime, nullable=False, key="plannedAt"),
    #: Recipients of the activity's last run; NULL when it never ran.
    Column("estimated", BigInteger, key="estimated"),
    Column("computed", UTCDateTime, nullable=False, default=utcnow),
)

#: Transactional events archived by mcSynch_local once final (the realtime table stays small);
#: kept 6 months by cleanup. Same columns as `event`, plus when it was archived.
event_history = Table(
    "event_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("pkey", String(64), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False, key="eventType"),
    Column("email", String(255)),
    Column("mobile_phone", String(32), key="mobilePhone"),
    Column("push_token", String(255), key="pushToken"),
    Column("ctx", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False),
    Column("reason", String(255), nullable=False, server_default=""),
    Column("template_id", Integer, key="templateId"),
    Column("delivery_log_id", BigInteger, key="deliveryLogId"),
    Column("created", UTCDateTime, nullable=False),
    Column("last_modified", UTCDateTime, nullable=False, key="lastModified"),
    Column("archived", UTCDateTime, nullable=False, default=utcnow),
    Index("ix_event_history_archived", "archived"),
    Index("ix_event_history_delivery_log", "deliveryLogId"),
)
#: The columns an archived event keeps from `event` (by key): all but `archived`.
EVENT_COLUMNS = tuple(c.key for c in event_history.columns if c.key != "archived")
