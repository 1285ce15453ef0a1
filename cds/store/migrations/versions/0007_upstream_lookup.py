"""upstream authorizations: indexed lookup keys (resource and authorization URI digests, subscription id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 17:35:00
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

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
    # Existing rows get their keys from the URIs they hold, computed as the application computed them at this
    # revision (frozen here: a migration must not change when bridge.upstream does, and cds imports nothing of bridge).
    bind = op.get_bind()
    table = sa.table("upstream_authorizations", sa.column("id"), sa.column("resource_uri"),
                     sa.column("authorization_uri"), sa.column("resource_digest"), sa.column("authorization_digest"),
                     sa.column("subscription_id"))
    rows = bind.execute(sa.select(table.c.id, table.c.resource_uri, table.c.authorization_uri)).all()
    for row_id, resource_uri, authorization_uri in rows:
        bind.execute(table.update().where(table.c.id == row_id).values(**lookup_keys(resource_uri, authorization_uri)))


def _resource_key(uri: str | None) -> str:
    if not uri:
        return ""
    parts = urlsplit(uri.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _digest(uri: str | None) -> str | None:
    return hashlib.sha256(_resource_key(uri).encode()).hexdigest() if uri else None


def _subscription_id(uri: str | None) -> str | None:
    segments = [s for s in urlsplit(uri or "").path.split("/") if s]
    for index in range(len(segments) - 1, 0, -1):
        if segments[index - 1] == "Subscription":
            return segments[index][:128]
    return None


def lookup_keys(resource_uri: str | None, authorization_uri: str | None) -> dict[str, str | None]:
    return {"resource_digest": _digest(resource_uri), "authorization_digest": _digest(authorization_uri),
            "subscription_id": _subscription_id(resource_uri)}


def downgrade() -> None:
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_authorization_digest"))
        batch_op.drop_index(batch_op.f("ix_upstream_authorizations_resource_digest"))
        batch_op.drop_column("subscription_id")
        batch_op.drop_column("authorization_digest")
        batch_op.drop_column("resource_digest")
