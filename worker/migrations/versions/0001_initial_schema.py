"""Initial schema: organizations, credentials, workflows, jobs, tasks, logs, commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 06:29:52.944744
"""

import sqlalchemy as sa
from alembic import op

import worker.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organization",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("name", name=op.f("uq_organization_name")),
    )
    op.create_table(
        "state_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=8), nullable=False),
        sa.Column("entity_id", sa.String(length=36), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_event")),
    )
    with op.batch_alter_table("state_event", schema=None) as batch_op:
        batch_op.create_index("ix_state_event_entity", ["entity", "entity_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_state_event_workflow_id"), ["workflow_id"], unique=False
        )

    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_api_key_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_api_key_key_prefix")),
    )
    op.create_table(
        "workflow",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pkey", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("running_version", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_workflow_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_workflow_org_id")),
        sa.UniqueConstraint("pkey", name=op.f("uq_workflow_pkey")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "command",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_command_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command")),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("origin_activity", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("vars", sa.JSON(), nullable=False),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_job_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_table(
        "log_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("activity", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_log_line_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_line")),
    )
    with op.batch_alter_table("log_line", schema=None) as batch_op:
        batch_op.create_index("ix_log_line_workflow", ["workflow_id", "id"], unique=False)

    op.create_table(
        "trigger",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("activity", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_trigger_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger")),
    )
    op.create_table(
        "workflow_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_workflow_version_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_version")),
        sa.UniqueConstraint("workflow_id", "version", name=op.f("uq_workflow_version_workflow_id")),
    )
    op.create_table(
        "join_arrival",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("join_activity", sa.String(length=64), nullable=False),
        sa.Column("from_activity", sa.String(length=64), nullable=False),
        sa.Column("from_task_id", sa.String(length=36), nullable=False),
        sa.Column("vars", sa.JSON(), nullable=False),
        sa.Column("consumed_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_join_arrival_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_arrival")),
        sa.UniqueConstraint("from_task_id", name=op.f("uq_join_arrival_from_task_id")),
    )
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("activity", sa.String(length=64), nullable=False),
        sa.Column("activity_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("vars", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("outlets", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worker.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fired", sa.Integer(), nullable=False),
        sa.Column("last_trigger_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_task_job_id_job"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow.id"],
            name=op.f("fk_task_workflow_id_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
    )
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_job_id"), ["job_id"], unique=False)
        batch_op.create_index("ix_task_state_due", ["state", "due_at"], unique=False)
        batch_op.create_index("ix_task_workflow_state", ["workflow_id", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_index("ix_task_workflow_state")
        batch_op.drop_index("ix_task_state_due")
        batch_op.drop_index(batch_op.f("ix_task_job_id"))

    op.drop_table("task")
    op.drop_table("join_arrival")
    op.drop_table("workflow_version")
    op.drop_table("trigger")
    with op.batch_alter_table("log_line", schema=None) as batch_op:
        batch_op.drop_index("ix_log_line_workflow")

    op.drop_table("log_line")
    op.drop_table("job")
    op.drop_table("command")
    op.drop_table("workflow")
    op.drop_table("api_key")
    with op.batch_alter_table("state_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_state_event_workflow_id"))
        batch_op.drop_index("ix_state_event_entity")

    op.drop_table("state_event")
    op.drop_table("organization")
