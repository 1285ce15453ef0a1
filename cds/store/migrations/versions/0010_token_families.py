"""token families (refresh rotation, code replay, revocation); failed authentications throttled per key with backoff

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("family_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_tokens_family_id"), ["family_id"], unique=False)
    # Existing tokens get the family reuse detection used before families existed: one per (grant, client).
    bind = op.get_bind()
    tokens = sa.table("tokens", sa.column("id"), sa.column("grant_id"), sa.column("client_id"),
                      sa.column("family_id"))
    for row_id, grant_id, client_id in bind.execute(sa.select(tokens.c.id, tokens.c.grant_id, tokens.c.client_id)):
        family = hashlib.sha256(f"{grant_id or ''}\x00{client_id}".encode()).hexdigest()
        bind.execute(tokens.update().where(tokens.c.id == row_id).values(family_id=family))
    # The counters are minutes old at most: the new table starts empty.
    op.drop_table("auth_failures")
    op.create_table(
        "auth_failures",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("blocks", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.Integer(), nullable=False),
        sa.Column("last_failure", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_auth_failures_last_failure"), "auth_failures", ["last_failure"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_failures_last_failure"), table_name="auth_failures")
    op.drop_table("auth_failures")
    op.create_table(
        "auth_failures",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_family_id"))
        batch_op.drop_column("family_id")
