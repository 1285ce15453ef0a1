"""bounded work per notification: the per-custodian notification rate (rate_windows) and the custodians'
client_credentials tokens shared by the workers (custodian_tokens)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 10:00:00

Both tables start empty: a rate window is a minute old at most, and a client token is asked for again on its
first use.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "custodian_tokens",
        sa.Column("custodian_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("client_key", sa.String(length=64), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("obtained", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("expires_at", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("requesting_until", cds.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("custodian_id", "scope"),
    )


def downgrade() -> None:
    op.drop_table("custodian_tokens")
    op.drop_table("rate_windows")
