"""Task indexes written on every hop: one redundant index dropped, one made partial.

ix_task_workflow_state (workflow_id, state) is a prefix of ix_task_workflow_state_created,
which serves the same lookups; ix_task_finished only ever serves finished_at ranges, so
unfinished tasks (every new row) need no entry. Each hop inserts a task row and updates
another (never a HOT update: the state is indexed): three index writes fewer per hop.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 01:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_index("ix_task_workflow_state")
        batch.drop_index("ix_task_finished")
        batch.create_index(
            "ix_task_finished",
            ["finished_at"],
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
        )


def downgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_index("ix_task_finished")
        batch.create_index("ix_task_finished", ["finished_at"])
        batch.create_index("ix_task_workflow_state", ["workflow_id", "state"])
