"""gateway tables

Revision ID: 0001
Revises:
Create Date: 2026-11-22 14:41:14.534480
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "auth_failures",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window"),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("client_id_issued_at", sa.Integer(), nullable=False),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(length=64), nullable=True),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("response_types", sa.JSON(), nullable=False),
        sa.Column("client_name", sa.Text(), nullable=False),
        sa.Column("contacts", sa.JSON(), nullable=False),
        sa.Column("authorization_details_types", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_options", sa.JSON(), nullable=False),
        sa.Column("default_scope", sa.Text(), nullable=True),
        sa.Column("default_redirect_uri", sa.Text(), nullable=True),
        sa.Column("default_authorization_details", sa.JSON(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clients_modified"), ["modified"], unique=False)
        batch_op.create_index(batch_op.f("ix_clients_registration_id"), ["registration_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("previous_uri", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(length=64), nullable=True),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("updates_requested", sa.JSON(), nullable=True),
        sa.Column("grants_requested", sa.JSON(), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=True),
        sa.Column("related_uri", sa.Text(), nullable=True),
        sa.Column("related_type", sa.String(length=32), nullable=True),
        sa.Column("amount", cds.store.types.ExactDecimal(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("message_id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_modified"), ["modified"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_registration_id"), ["registration_id"], unique=False)

    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("authorization_details", sa.JSON(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=16), nullable=False),
        sa.Column("requested_redirect_uri", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("auth_time", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
        ),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
        ),
        sa.PrimaryKeyConstraint("credential_id"),
        sa.UniqueConstraint("secret_hash"),
    )
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credentials_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_credentials_modified"), ["modified"], unique=False)
        batch_op.create_index(batch_op.f("ix_credentials_registration_id"), ["registration_id"], unique=False)

    op.create_table(
        "grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("modified", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("authorization_details", sa.JSON(), nullable=False),
        sa.Column("enabled_scope", sa.Text(), nullable=False),
        sa.Column("enabled_authorization_details", sa.JSON(), nullable=False),
        sa.Column("states", sa.JSON(), nullable=False),
        sa.Column("receipt_confirmations", sa.JSON(), nullable=False),
        sa.Column("replacing", sa.JSON(), nullable=False),
        sa.Column("replaced_by", sa.JSON(), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=True),
        sa.Column("children", sa.JSON(), nullable=False),
        sa.Column("not_before", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("not_after", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("eta", cds.store.types.UTCDateTime(), nullable=True),
        sa.Column("expires", cds.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
        ),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grants_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_grants_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_grants_modified"), ["modified"], unique=False)
        batch_op.create_index(batch_op.f("ix_grants_registration_id"), ["registration_id"], unique=False)
        batch_op.create_index("ix_grants_registration_modified", ["registration_id", "modified"], unique=False)

    op.create_table(
        "pushed_requests",
        sa.Column("handle_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
        ),
        sa.PrimaryKeyConstraint("handle_hash"),
    )
    with op.batch_alter_table("pushed_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pushed_requests_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("access_token_hash", sa.String(length=64), nullable=False),
        sa.Column("refresh_token_hash", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("credential_id", sa.String(length=64), nullable=True),
        sa.Column("grant_id", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("authorization_details", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.Integer(), nullable=False),
        sa.Column("expires_in", sa.Integer(), nullable=False),
        sa.Column("refresh_expires_at", sa.Integer(), nullable=True),
        sa.Column("access_revoked", sa.Boolean(), nullable=False),
        sa.Column("refresh_revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("access_token_hash"),
        sa.UniqueConstraint("refresh_token_hash"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tokens_credential_id"), ["credential_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tokens_grant_id"), ["grant_id"], unique=False)

    op.create_table(
        "receipts",
        sa.Column("handle_hash", sa.String(length=64), nullable=False),
        sa.Column("confirmation", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("created", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("superseded_by", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.grant_id"],
        ),
        sa.PrimaryKeyConstraint("handle_hash"),
        sa.UniqueConstraint("confirmation"),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipts_grant_id"), ["grant_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipts_grant_id"))

    op.drop_table("receipts")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_grant_id"))
        batch_op.drop_index(batch_op.f("ix_tokens_credential_id"))
        batch_op.drop_index(batch_op.f("ix_tokens_client_id"))

    op.drop_table("tokens")
    with op.batch_alter_table("pushed_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pushed_requests_expires_at"))

    op.drop_table("pushed_requests")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_registration_modified")
        batch_op.drop_index(batch_op.f("ix_grants_registration_id"))
        batch_op.drop_index(batch_op.f("ix_grants_modified"))
        batch_op.drop_index(batch_op.f("ix_grants_customer_id"))
        batch_op.drop_index(batch_op.f("ix_grants_client_id"))

    op.drop_table("grants")
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credentials_registration_id"))
        batch_op.drop_index(batch_op.f("ix_credentials_modified"))
        batch_op.drop_index(batch_op.f("ix_credentials_client_id"))

    op.drop_table("credentials")
    op.drop_table("authorization_codes")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_registration_id"))
        batch_op.drop_index(batch_op.f("ix_messages_modified"))

    op.drop_table("messages")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clients_registration_id"))
        batch_op.drop_index(batch_op.f("ix_clients_modified"))

    op.drop_table("clients")
    op.drop_table("auth_failures")
