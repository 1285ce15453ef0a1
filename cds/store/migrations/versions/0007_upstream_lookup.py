"""upstream authorizations: indexed lookup keys (resource and authorization URI digests, subscription id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 17:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("authorization_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("subscription_id", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_upstream_authorizations_resource_digest"), ["resource_digest"])
        batch_op.create_index(batch_op.f("ix_upstream_authorizations_authorization_digest"), ["authorization_digest"])
        batch_op.create_index(batch_op.f("ix_upstream_authorizations_subscription_id"), ["subscription_id"])
    # Existing rows get their keys from the URIs they hold (the same functions the application uses).
    from cds.upstream import lookup_keys

    bind = op.get_bind()
    table = sa.table("upstream_authorizations", sa.column("id"), sa.column("resource_uri"),
                     sa.column("authorization_uri"), sa.column("resource_digest"), sa.column("authorization_digest"),
                     sa.column("subscription_id"))
    rows = bind.execute(sa.select(table.c.id, table.c.resource_uri, table.c.authorization_uri)).all()
    for row_id, resource_uri, authorization_uri in rows:
        bind.execute(table.update().where(table.c.id == row_id).values(**lookup_keys(resource_uri, authorization_uri)))


def downgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_authorization_digest"))
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_resource_digest"))
        batch_op.drop_column("subscription_id")
        batch_op.drop_column("authorization_digest")
        batch_op.drop_column("resource_digest")
