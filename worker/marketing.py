"""The marketing database: profiles, services, subscriptions, audiences, working tables.

Core tables (not ORM classes): targeting and data activities work on sets with SQLAlchemy
Core, never row by row. Columns are snake_case in the database and camelCase under their
`key`, which is the name filters, file columns and templates use (`table.c.firstName`).
Every row belongs to one organization: no activity reads another organization's data.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
)

from worker.db import Base, UTCDateTime, utcnow

metadata = Base.metadata

profile = Table(
    "profile",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("email", String(255)),
    Column("mobile_phone", String(32), key="mobilePhone"),
    Column("push_token", String(255), key="pushToken"),
    Column("crm_id", String(64), key="crmId"),
    Column("first_name", String(128), key="firstName"),
    Column("last_name", String(128), key="lastName"),
    Column("birth_date", Date, key="birthDate"),
    Column("country", String(64)),
    Column("city", String(128)),
    Column("gender", String(16)),
    Column("preferred_channel", String(16), key="preferredChannel"),
    Column("segment_code", String(64), key="segmentCode"),
    Column("email_opt_out", Boolean, nullable=False, server_default=false(), key="emailOptOut"),
    Column("sms_opt_out", Boolean, nullable=False, server_default=false(), key="smsOptOut"),
    Column("push_opt_out", Boolean, nullable=False, server_default=false(), key="pushOptOut"),
    #: Denylisted on every channel (the platform's "no longer contact").
    Column("blacklisted", Boolean, nullable=False, server_default=false()),
    #: The address itself is quarantined (hard bounces, complaints).
    Column(
        "email_blacklisted",
        Boolean,
        nullable=False,
        server_default=false(),
        key="emailBlacklisted",
    ),
    Column(
        "mobile_blacklisted",
        Boolean,
        nullable=False,
        server_default=false(),
        key="mobileBlacklisted",
    ),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Column("last_modified", UTCDateTime, nullable=False, default=utcnow, key="lastModified"),
    UniqueConstraint("org_id", "crmId"),
    Index("ix_profile_org_email", "org_id", "email"),
)

service = Table(
    "service",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("label", String(255), nullable=False, server_default=""),
    Column("channel", String(16), nullable=False, server_default="email"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    UniqueConstraint("org_id", "name"),
)

subscription = Table(
    "subscription",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "profile_id",
        ForeignKey("profile.id", ondelete="CASCADE"),
        nullable=False,
        key="profileId",
    ),
    Column(
        "service_id",
        ForeignKey("service.id", ondelete="CASCADE"),
        nullable=False,
        key="serviceId",
    ),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    UniqueConstraint("profileId", "serviceId"),
    Index("ix_subscription_service", "serviceId"),
)

audience = Table(
    "audience",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("label", String(255), nullable=False, server_default=""),
    Column("resource", String(64), nullable=False, server_default="profile"),
    Column("count", BigInteger, nullable=False, server_default="0"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
    Column("last_modified", UTCDateTime, nullable=False, default=utcnow, key="lastModified"),
    UniqueConstraint("org_id", "name"),
)

audience_member = Table(
    "audience_member",
    metadata,
    Column(
        "audience_id",
        ForeignKey("audience.id", ondelete="CASCADE"),
        primary_key=True,
        key="audienceId",
    ),
    Column("member_id", BigInteger, primary_key=True, key="memberId"),
)

#: Every working table that exists, so it is dropped with its job's history.
working_table = Table(
    "working_table",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("org_id", ForeignKey("organization.id"), nullable=False),
    Column("workflow_id", Integer, nullable=False, index=True),
    Column("job_id", String(36), nullable=False, index=True),
    Column("task_id", String(36), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("count", BigInteger, nullable=False, server_default="0"),
    Column("created", UTCDateTime, nullable=False, default=utcnow),
)
