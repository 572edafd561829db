"""Technical workflows: admins' settings and one row per fired slot.

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


def downgrade() -> None:
    op.drop_table("technical_setting")
    op.drop_table("technical_fire")
