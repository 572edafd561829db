"""Monitoring: indexes behind the monitoring page's queries, and database-kept metric counters.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 15:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: (table, index, columns): each one serves a query of worker/monitoring.py (see EXPLAIN
#: in bench/monitoring.py); names follow the models' __table_args__.
INDEXES = (
    ("workflow", "ix_workflow_org_state_name", ["org_id", "state", "name"]),
    ("job", "ix_job_workflow_created", ["workflow_id", "created_at"]),
    ("task", "ix_task_workflow_created", ["workflow_id", "created_at", "id"]),
    ("task", "ix_task_workflow_state_created", ["workflow_id", "state", "created_at"]),
    ("task", "ix_task_workflow_activity_created", ["workflow_id", "activity", "created_at"]),
    ("task", "ix_task_finished", ["finished_at"]),
    ("trigger", "ix_trigger_created", ["created_at"]),
    ("trigger", "ix_trigger_workflow_activity", ["workflow_id", "activity", "created_at"]),
    ("log_line", "ix_log_line_workflow_level", ["workflow_id", "level", "id"]),
    ("log_line", "ix_log_line_task", ["task_id", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "metric_counter",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name=op.f("pk_metric_counter")),
    )
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
    op.drop_table("metric_counter")
