"""ops: jobs carry their custodian and request id, indexes for the ops dashboard, per-minute activity and
per-custodian health

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds.store.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("custodian_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
    # Existing jobs: the custodian their payload names (read in Python: JSON paths differ between backends).
    bind = op.get_bind()
    jobs = sa.table("jobs", sa.column("job_id"), sa.column("payload", sa.JSON), sa.column("custodian_id"))
    for job_id, payload in bind.execute(sa.select(jobs.c.job_id, jobs.c.payload)).all():
        custodian = payload.get("custodian_id") if isinstance(payload, dict) else None
        if isinstance(custodian, str) and custodian:
            bind.execute(jobs.update().where(jobs.c.job_id == job_id).values(custodian_id=custodian[:64]))
    op.create_index("ix_jobs_state_custodian_kind_created", "jobs", ["state", "custodian_id", "kind", "created"],
                    unique=False)
    op.create_index("ix_jobs_state_modified", "jobs", ["state", "modified"], unique=False)
    op.create_index("ix_grants_status", "grants", ["status"], unique=False)
    op.create_table(
        "ops_minutes",
        sa.Column("minute", UTCDateTime(), nullable=False),
        sa.Column("custodian_id", sa.String(length=64), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("upstream_requests", sa.Integer(), nullable=False),
        sa.Column("upstream_errors", sa.Integer(), nullable=False),
        sa.Column("upstream_ms", sa.BigInteger(), nullable=False),
        sa.Column("notifications", sa.Integer(), nullable=False),
        sa.Column("notifications_refused", sa.Integer(), nullable=False),
        sa.Column("sftp_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "custodian_id"),
    )
    op.create_table(
        "ops_custodians",
        sa.Column("custodian_id", sa.String(length=64), nullable=False),
        sa.Column("last_success", UTCDateTime(), nullable=True),
        sa.Column("last_failure", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_latency_ms", sa.Integer(), nullable=True),
        sa.Column("last_notification", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("custodian_id"),
    )


def downgrade() -> None:
    op.drop_table("ops_custodians")
    op.drop_table("ops_minutes")
    op.drop_index("ix_grants_status", table_name="grants")
    op.drop_index("ix_jobs_state_modified", table_name="jobs")
    op.drop_index("ix_jobs_state_custodian_kind_created", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("request_id")
        batch_op.drop_column("custodian_id")
