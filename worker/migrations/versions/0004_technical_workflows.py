"""Technical workflows: admins' settings, one row per fired slot, pointers, reporting aggregates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:35:20.625639
"""

import sqlalchemy as sa
from alembic import op

import worker.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "technical_fire",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.DateTime(), nullable=False),
        sa.Column("fired_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=255), server_default="", nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("sends", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("name", "slot", name=op.f("pk_technical_fire")),
    )
    op.create_table(
        "technical_setting",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=True),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("last_slot", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(length=255), server_default="", nullable=False),
        sa.Column("updated", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_technical_setting")),
    )

    op.create_table(
        "technical_pointer",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_technical_pointer")),
    )
    op.create_table(
        "reporting_aggregate",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("deliveries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ignored", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bounced", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("opens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("clicks", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_reporting_aggregate_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("org_id", "day", "channel", name=op.f("pk_reporting_aggregate")),
    )

    op.create_table(
        "bounce_rule",
        sa.Column("pattern", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), server_default="", nullable=False),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pattern", name=op.f("pk_bounce_rule")),
    )
    op.create_table(
        "mail_domain",
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("mx", sa.JSON(), nullable=False),
        sa.Column("max_connections", sa.Integer(), server_default="10", nullable=False),
        sa.Column("updated", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_mail_domain")),
    )

    op.create_table(
        "forecast_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("activity", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("planned_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("estimated", sa.BigInteger(), nullable=True),
        sa.Column("computed", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_forecast_log_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_log")),
    )
    op.create_table(
        "event_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("pkey", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("mobile_phone", sa.String(length=32), nullable=True),
        sa.Column("push_token", sa.String(length=255), nullable=True),
        sa.Column("ctx", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), server_default="", nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("delivery_log_id", sa.BigInteger(), nullable=True),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("archived", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_event_history_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_history")),
        sa.UniqueConstraint("pkey", name=op.f("uq_event_history_pkey")),
    )
    with op.batch_alter_table("event_history", schema=None) as batch_op:
        batch_op.create_index("ix_event_history_archived", ["archived"], unique=False)
        batch_op.create_index("ix_event_history_delivery_log", ["delivery_log_id"], unique=False)


def downgrade() -> None:
    op.drop_table("event_history")
    op.drop_table("forecast_log")
    op.drop_table("mail_domain")
    op.drop_table("bounce_rule")
    op.drop_table("reporting_aggregate")
    op.drop_table("technical_pointer")
    op.drop_table("technical_setting")
    op.drop_table("technical_fire")
