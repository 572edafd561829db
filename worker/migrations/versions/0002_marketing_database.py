"""Marketing database (profiles, audiences, working tables); task inputs and progress.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:08:39.906637
"""

import sqlalchemy as sa
from alembic import op

import worker.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audience",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), server_default="", nullable=False),
        sa.Column("resource", sa.String(length=64), server_default="profile", nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_audience_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audience")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_audience_org_id")),
    )
    op.create_table(
        "profile",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("mobile_phone", sa.String(length=32), nullable=True),
        sa.Column("push_token", sa.String(length=255), nullable=True),
        sa.Column("crm_id", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=True),
        sa.Column("last_name", sa.String(length=128), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("country", sa.String(length=64), nullable=True),
        sa.Column("city", sa.String(length=128), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("preferred_channel", sa.String(length=16), nullable=True),
        sa.Column("segment_code", sa.String(length=64), nullable=True),
        sa.Column("email_opt_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sms_opt_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("push_opt_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("blacklisted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("email_blacklisted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("mobile_blacklisted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_modified", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_profile_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile")),
        sa.UniqueConstraint("org_id", "crm_id", name=op.f("uq_profile_org_id")),
    )
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.create_index("ix_profile_org_email", ["org_id", "email"], unique=False)

    op.create_table(
        "service",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), server_default="", nullable=False),
        sa.Column("channel", sa.String(length=16), server_default="email", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_service_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_service_org_id")),
    )
    op.create_table(
        "working_table",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_working_table_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_working_table")),
    )
    with op.batch_alter_table("working_table", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_working_table_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_working_table_workflow_id"), ["workflow_id"], unique=False
        )

    op.create_table(
        "audience_member",
        sa.Column("audience_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audience.id"],
            name=op.f("fk_audience_member_audience_id_audience"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "member_id", name=op.f("pk_audience_member")),
    )
    op.create_table(
        "subscription",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "profile_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("created", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profile.id"],
            name=op.f("fk_subscription_profile_id_profile"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["service.id"],
            name=op.f("fk_subscription_service_id_service"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription")),
        sa.UniqueConstraint("profile_id", "service_id", name=op.f("uq_subscription_profile_id")),
    )
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.create_index("ix_subscription_service", ["service_id"], unique=False)

    with op.batch_alter_table("join_arrival", schema=None) as batch_op:
        batch_op.drop_constraint("uq_join_arrival_from_task_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_join_arrival_from_task_id", ["from_task_id", "join_activity"]
        )

    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("join_arrival", schema=None) as batch_op:
        batch_op.drop_constraint("uq_join_arrival_from_task_id", type_="unique")
        batch_op.create_unique_constraint("uq_join_arrival_from_task_id", ["from_task_id"])

    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("progress")
        batch_op.drop_column("inputs")

    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_service")

    op.drop_table("subscription")
    op.drop_table("audience_member")
    with op.batch_alter_table("working_table", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_working_table_workflow_id"))
        batch_op.drop_index(batch_op.f("ix_working_table_job_id"))

    op.drop_table("working_table")
    op.drop_table("service")
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_index("ix_profile_org_email")

    op.drop_table("profile")
    op.drop_table("audience")
