"""jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 16:30:33.960460
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("run_after", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("lease_until", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("started", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("finished", cds.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("job_id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_state_run_after", ["state", "run_after"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_state_run_after")

    op.drop_table("jobs")
