"""customer data objects and usage segments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 15:04:27.986824
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "data_objects",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("synced", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("sort_date", sa.String(length=10), nullable=True),
        sa.Column("account_number", sa.String(length=128), nullable=True),
        sa.Column("contract_number", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("kind", "object_id"),
    )
    with op.batch_alter_table("data_objects", schema=None) as batch_op:
        batch_op.create_index("ix_data_objects_customer_kind", ["customer_id", "kind"], unique=False)

    op.create_table(
        "usage_segments",
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("synced", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("segment_start", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("segment_end", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("account_number", sa.String(length=128), nullable=True),
        sa.Column("contract_number", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("segment_id"),
    )
    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.create_index("ix_usage_segments_customer_start", ["customer_id", "segment_start"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_segments_customer_start")

    op.drop_table("usage_segments")
    with op.batch_alter_table("data_objects", schema=None) as batch_op:
        batch_op.drop_index("ix_data_objects_customer_kind")

    op.drop_table("data_objects")
