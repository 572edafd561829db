"""Messaging: deliveries, logs, tracking, templates, events, validations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:25:57.432716
"""

import sqlalchemy as sa
from alembic import op

import worker.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("pkey", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("mobile_phone", sa.String(length=32), nullable=True),
        sa.Column("push_token", sa.String(length=255), nullable=True),
        sa.Column("ctx", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reason", sa.String(length=255), server_default="", nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("delivery_log_id", sa.BigInteger(), nullable=True),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_event_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
        sa.UniqueConstraint("pkey", name=op.f("uq_event_pkey")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_org_type", ["org_id", "event_type", "created"], unique=False
        )
        batch_op.create_index("ix_event_status", ["status", "id"], unique=False)

    op.create_table(
        "message_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), server_default="email", nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("published", sa.Integer(), server_default="1", nullable=False),
        sa.Column("expiry_hours", sa.Integer(), server_default="24", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_message_template_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_template")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_message_template_org_id")),
    )
    with op.batch_alter_table("message_template", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_template_route", ["org_id", "event_type", "channel"], unique=False
        )

    op.create_table(
        "tracking_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_log_id", sa.BigInteger(), nullable=True),
        sa.Column("profile_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("detail", sa.String(length=255), server_default="", nullable=False),
        sa.Column("user_agent", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_tracking_log_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_log")),
    )
    with op.batch_alter_table("tracking_log", schema=None) as batch_op:
        batch_op.create_index("ix_tracking_log_delivery", ["delivery_id", "kind"], unique=False)
        batch_op.create_index("ix_tracking_log_org_created", ["org_id", "created"], unique=False)

    op.create_table(
        "validation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("pkey", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("activity", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), server_default="", nullable=False),
        sa.Column("assignee", sa.String(length=128), server_default="", nullable=False),
        sa.Column("assignee_group", sa.String(length=128), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("decided_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("decided_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_validation_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation")),
        sa.UniqueConstraint("pkey", name=op.f("uq_validation_pkey")),
        sa.UniqueConstraint("task_id", name=op.f("uq_validation_task_id")),
    )
    with op.batch_alter_table("validation", schema=None) as batch_op:
        batch_op.create_index("ix_validation_org_state", ["org_id", "state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_validation_workflow_id"), ["workflow_id"], unique=False
        )

    op.create_table(
        "delivery",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=255), server_default="", nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="preparing", nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("ab_test", sa.JSON(), nullable=True),
        sa.Column("indicators", sa.JSON(), nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_delivery_org_id_organization")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["message_template.id"],
            name=op.f("fk_delivery_template_id_message_template"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery")),
        sa.UniqueConstraint("task_id", name=op.f("uq_delivery_task_id")),
        sa.UniqueConstraint("template_id", name=op.f("uq_delivery_template_id")),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_org_created", ["org_id", "created"], unique=False)
        batch_op.create_index(batch_op.f("ix_delivery_workflow_id"), ["workflow_id"], unique=False)

    op.create_table(
        "delivery_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reason", sa.String(length=255), server_default="", nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
            name=op.f("fk_delivery_log_delivery_id_delivery"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_delivery_log_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_log")),
        sa.UniqueConstraint("delivery_id", "event_id", name="uq_delivery_log_delivery_id_event"),
        sa.UniqueConstraint("delivery_id", "profile_id", name=op.f("uq_delivery_log_delivery_id")),
    )
    with op.batch_alter_table("delivery_log", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_log_message_id", ["message_id"], unique=False)
        batch_op.create_index(
            "ix_delivery_log_org_modified", ["org_id", "last_modified"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_log", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_log_org_modified")
        batch_op.drop_index("ix_delivery_log_message_id")

    op.drop_table("delivery_log")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_workflow_id"))
        batch_op.drop_index("ix_delivery_org_created")

    op.drop_table("delivery")
    with op.batch_alter_table("validation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_validation_workflow_id"))
        batch_op.drop_index("ix_validation_org_state")

    op.drop_table("validation")
    with op.batch_alter_table("tracking_log", schema=None) as batch_op:
        batch_op.drop_index("ix_tracking_log_org_created")
        batch_op.drop_index("ix_tracking_log_delivery")

    op.drop_table("tracking_log")
    with op.batch_alter_table("message_template", schema=None) as batch_op:
        batch_op.drop_index("ix_message_template_route")

    op.drop_table("message_template")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_status")
        batch_op.drop_index("ix_event_org_type")

    op.drop_table("event")
