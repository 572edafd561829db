"""Delivery batches: one delivery's send spread over the workers' pool processes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 21:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

import worker.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_until", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", worker.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
            name=op.f("fk_delivery_batch_delivery_id_delivery"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_batch")),
        sa.UniqueConstraint("delivery_id", "seq", name=op.f("uq_delivery_batch_delivery_id")),
    )
    op.create_index("ix_delivery_batch_delivery_state", "delivery_batch", ["delivery_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_delivery_batch_delivery_state", table_name="delivery_batch")
    op.drop_table("delivery_batch")
