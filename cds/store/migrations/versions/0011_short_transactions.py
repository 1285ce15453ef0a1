"""short transactions and publishing once: token refreshes claimed without a transaction across the custodian's
answer, and when each job's last message was published

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 10:00:00

Nothing to backfill: no refresh is in progress while the store is migrated, and a job never published since is
published by the reconciler's next run (once) when it is due or stale, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refresh_claim", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("refresh_claimed_until", cds.store.types.UTCDateTime(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published_at", cds.store.types.UTCDateTime(), nullable=True))


def downgrade() -> None:
    _drop_columns("jobs", "published_at")
    _drop_columns("upstream_authorizations", "refresh_claimed_until", "refresh_claim")


def _drop_columns(table: str, *columns: str) -> None:
    """``ALTER TABLE … DROP COLUMN`` wherever the database has it (SQLite since 3.35), as in 0009: SQLite's batch mode
    would copy the table, which fails for ``upstream_authorizations`` (other tables reference it) while foreign keys
    are on."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or (bind.dialect.server_version_info or (0,)) >= (3, 35):
        for column in columns:
            op.drop_column(table, column)
        return
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.drop_column(column)
