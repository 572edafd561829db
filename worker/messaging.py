"""The messaging database: deliveries, delivery and tracking logs, templates, events, validations.

Core tables like worker.marketing: deliveries work on recipient sets in batches, never one ORM
object per message. Columns are snake_case in the database and camelCase under their `key`.
Every row belongs to one organization.

Never twice: a delivery log row is unique per (delivery, profile) and per (delivery, event),
and is written `pending` before its message goes out (RELIABILITY.md section 3.3), so a
redelivered task finds what an earlier attempt claimed and does not send it again.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from worker.db import Base, UTCDateTime, utcnow

metadata = Base.metadata

_BIGINT = BigInteger().with_variant(Integer, "sqlite")

#: Delivery log statuses. `pending` is claimed but not known to be sent; `unknown` is a claim
#: left by an attempt that died mid-send: it is never blindly resent.
LOG_STATUSES = ("pending", "sent", "failed", "ignored", "bounced", "unknown")
#: Transactional event statuses (DESIGN section 6; seeds/001 updateEventsStatus).
EVENT_STATUSES = (
    "pending",
    "processing",
    "processed",
    "ignored",
    "deliveryFailed",
    "routingFailed",
    "tooOld",
    "paused",
)
VALIDATION_STATES = ("pending", "approved", "rejected", "timedOut", "cancelled")

#: One message sent to many recipients: a workflow's email/sms/push task, or the delivery a
#: transactional message template uses for its events.
delivery = Table(
    "delivery",
    metadata,
    Column("id", _BIGINT, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    #: The activity name, or the message template's name for transactional deliveries.
    Column("name", String(128), nullable=False),
    Column("label", String(255), nullable=False, server_default=""),
    #: Workflow deliveries: the task that sends it; one delivery per task, whatever the attempt.
    Column("workflow_id", Integer, index=True),
    Column("job_id", String(36)),
    Column("task_id", String(36), unique=True),
    #: Transactional deliveries: the message template they send.
    Column(
        "template_id",
        ForeignKey("message_template.id", ondelete="CASCADE"),
        unique=True,
        key="templateId",
    ),
    #: preparing, proofSent, toValidate, sending, sent, failed, abTesting
    Column("state", String(16), nullable=False, server_default="preparing"),
    #: What was rendered: subject, html, text, body, title, sender... (channel dependent).
    Column("content", JSON, nullable=False, default=dict),
    #: A/B test settings and outcome: variants, share, criterion, endsAt, winner.
    Column("ab_test", JSON, key="abTest"),
    #: Indicators computed by the technical workflows (sent, opens, clicks, bounces...).
    Column("indicators", JSON, nullable=False, default=dict),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Column(
        "last_modified",
        UTCDateTime,
        nullable=False,
        default=utcnow,
        onupdate=utcnow,
        key="lastModified",
    ),
    Index("ix_delivery_org_created", "org_id", "created"),
)

#: One row per (delivery, recipient): the recipient is a profile or a transactional event.
delivery_log = Table(
    "delivery_log",
    metadata,
    Column("id", _BIGINT, primary_key=True),
    Column(
        "delivery_id",
        ForeignKey("delivery.id", ondelete="CASCADE"),
        nullable=False,
        key="deliveryId",
    ),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("profile_id", BigInteger, key="profileId"),
    Column("event_id", BigInteger, key="eventId"),
    #: The address used (email, phone number, push token), kept for bounces and audits.
    Column("address", String(255), nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("reason", String(255), nullable=False, server_default=""),
    #: A/B variant name; NULL for a delivery without a test.
    Column("variant", String(32)),
    #: Stable across attempts (uuid5 of delivery and recipient): the SMTP Message-ID and the
    #: HTTP providers' Idempotency-Key, so bounces and receipts map back to this row.
    Column("message_id", String(255), nullable=False, key="messageId"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Column(
        "last_modified",
        UTCDateTime,
        nullable=False,
        default=utcnow,
        onupdate=utcnow,
        key="lastModified",
    ),
    UniqueConstraint("deliveryId", "profileId"),
    UniqueConstraint("deliveryId", "eventId", name="uq_delivery_log_delivery_id_event"),
    Index("ix_delivery_log_message_id", "messageId"),
    #: Incremental technical workflows read logs by id past a pointer, or by lastModified.
    Index("ix_delivery_log_org_modified", "org_id", "lastModified"),
)

#: Opens, clicks and bounces, one row per hit.
tracking_log = Table(
    "tracking_log",
    metadata,
    Column("id", _BIGINT, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("delivery_id", BigInteger, nullable=False, key="deliveryId"),
    Column("delivery_log_id", BigInteger, key="deliveryLogId"),
    Column("profile_id", BigInteger, key="profileId"),
    #: open, click, bounce
    Column("kind", String(16), nullable=False),
    Column("url", Text),
    #: Bounces: hard, soft, complaint; and the provider's text.
    Column("detail", String(255), nullable=False, server_default=""),
    Column("user_agent", String(255), nullable=False, server_default="", key="userAgent"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Index("ix_tracking_log_delivery", "deliveryId", "kind"),
    Index("ix_tracking_log_org_created", "org_id", "created"),
)

#: A transactional message template: what an event type becomes when it is delivered.
message_template = Table(
    "message_template",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("event_type", String(64), nullable=False, key="eventType"),
    Column("channel", String(16), nullable=False, server_default="email"),
    #: subject/html/text for email, text for sms, title/body for push (Jinja2, sandboxed).
    Column("content", JSON, nullable=False, default=dict),
    Column("published", Integer, nullable=False, server_default="1"),
    #: 1 while paused: its events wait `paused` and go when it resumes (if not too old by then).
    Column("paused", Integer, nullable=False, server_default="0"),
    #: Events older than this when their turn comes are `tooOld`.
    Column("expiry_hours", Integer, nullable=False, server_default="24", key="expiryHours"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    UniqueConstraint("org_id", "name"),
    Index("ix_message_template_route", "org_id", "eventType", "channel"),
)

#: A transactional event posted to /<ORG>/campaign/event/<eventType>.
event = Table(
    "event",
    metadata,
    Column("id", _BIGINT, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    #: The opaque key returned to the caller (`@...`), so ids are not guessable.
    Column("pkey", String(64), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False, key="eventType"),
    Column("email", String(255)),
    Column("mobile_phone", String(32), key="mobilePhone"),
    Column("push_token", String(255), key="pushToken"),
    #: The event's data, readable in templates as `ctx`.
    Column("ctx", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("reason", String(255), nullable=False, server_default=""),
    Column("template_id", Integer, key="templateId"),
    Column("delivery_log_id", BigInteger, key="deliveryLogId"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Column(
        "last_modified",
        UTCDateTime,
        nullable=False,
        default=utcnow,
        onupdate=utcnow,
        key="lastModified",
    ),
    Index("ix_event_status", "status", "id"),
    Index("ix_event_org_type", "org_id", "eventType", "created"),
)

#: A human validation task: who decides, and what they decided.
validation = Table(
    "validation",
    metadata,
    Column("id", _BIGINT, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("pkey", String(64), nullable=False, unique=True),
    Column("workflow_id", Integer, nullable=False, index=True),
    Column("job_id", String(36), nullable=False),
    #: The waiting task; one validation per task.
    Column("task_id", String(36), nullable=False, unique=True),
    Column("activity", String(64), nullable=False),
    Column("subject", String(255), nullable=False, server_default=""),
    Column("assignee", String(128), nullable=False, server_default=""),
    Column("assignee_group", String(128), nullable=False, server_default="", key="group"),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("comment", Text, nullable=False, server_default=""),
    Column("decided_by", String(128), nullable=False, server_default="", key="decidedBy"),
    Column("decided_at", UTCDateTime, key="decidedAt"),
    Column("due_at", UTCDateTime, key="dueAt"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Index("ix_validation_org_state", "org_id", "state"),
)
