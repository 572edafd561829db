"""Message templates can be paused: their events wait `paused` until they resume.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 15:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_template") as batch:
        batch.add_column(sa.Column("paused", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("message_template") as batch:
        batch.drop_column("paused")
