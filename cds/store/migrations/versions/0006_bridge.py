"""bridge: deferred jobs wait for a resource; upstream authorizations record their revocation

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_for", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_jobs_waiting_for", ["waiting_for"], unique=False)
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked", cds.store.types.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.drop_column("revoked")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_waiting_for")
        batch_op.drop_column("waiting_for")
