"""upstream authorizations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 16:06:49.731176
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_authorizations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("custodian_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("expires_at", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("resource_uri", sa.Text(), nullable=True),
        sa.Column("authorization_uri", sa.Text(), nullable=True),
        sa.Column("customer_resource_uri", sa.Text(), nullable=True),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.grant_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upstream_authorizations_custodian_id"), ["custodian_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_upstream_authorizations_grant_id"), ["grant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_grant_id"))
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_custodian_id"))

    op.drop_table("upstream_authorizations")
