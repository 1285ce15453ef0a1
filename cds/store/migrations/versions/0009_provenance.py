"""provenance: data sets per grant, the upstream authorization behind each stored object, the UsagePoints each
upstream authorization covers, the RetailCustomer of each authorization, and the warning a finished job reports

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 10:00:00

Existing data survives as it was read: every stored object and every grant stays in the customer's own data set
(""), so grants made before this revision keep seeing what they saw (and keep fetching into it, with the ids they
had). Which authorization brought an object is known only where the customer has exactly one upstream
authorization: those objects get its id; the others keep None (the stored rows do not say which of several
authorizations carried them). No UsagePoint is known for existing authorizations: they are recorded by their next
fetch or bulk part.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

import cds.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_set", sa.String(length=64), server_default="", nullable=False))
    for table, old_index, new_index, columns in (
            ("data_objects", "ix_data_objects_customer_kind", "ix_data_objects_customer_set_kind",
             ["customer_id", "data_set", "kind"]),
            ("usage_segments", "ix_usage_segments_customer_start", "ix_usage_segments_customer_set_start",
             ["customer_id", "data_set", "segment_start"])):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("data_set", sa.String(length=64), server_default="", nullable=False))
            batch_op.add_column(sa.Column("upstream_id", sa.Integer(), nullable=True))
            batch_op.drop_index(old_index)
            batch_op.create_index(new_index, columns, unique=False)
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retail_customer", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_upstream_authorizations_custodian_customer", ["custodian_id", "retail_customer"],
                              unique=False)
    op.create_table(
        "upstream_usage_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("upstream_id", sa.Integer(), nullable=False),
        sa.Column("custodian_id", sa.String(length=64), nullable=False),
        sa.Column("retail_customer", sa.String(length=128), nullable=False),
        sa.Column("usage_point", sa.String(length=128), nullable=False),
        sa.Column("first_seen", cds.store.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen", cds.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["upstream_id"], ["upstream_authorizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("upstream_usage_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upstream_usage_points_upstream_id"), ["upstream_id"], unique=False)
        batch_op.create_index("ix_upstream_usage_points_custodian_point", ["custodian_id", "usage_point"],
                              unique=False)
        batch_op.create_index("uq_upstream_usage_points_upstream_point",
                              ["upstream_id", "retail_customer", "usage_point"], unique=True)
    with op.batch_alter_table("jobs", schema=None) as batch_op:  # the run's result is 0008's
        batch_op.add_column(sa.Column("warning", sa.Text(), nullable=True))
    _backfill()


def _retail_customer(uri: str | None) -> str | None:
    """``{C}`` of the first ``RetailCustomer/{C}`` path segment pair (espi.bulk.retail_customer_of at this revision,
    frozen here: cds imports nothing of espi, and a migration must not change when the library does)."""
    segments = urlsplit((uri or "").strip()).path.split("/")
    for index, segment in enumerate(segments[:-1]):
        if segment == "RetailCustomer" and segments[index + 1]:
            return segments[index + 1][:128]
    return None


def _backfill() -> None:
    bind = op.get_bind()
    upstream = sa.table("upstream_authorizations", sa.column("id"), sa.column("customer_id"),
                        sa.column("customer_resource_uri"), sa.column("retail_customer"))
    rows = bind.execute(sa.select(upstream.c.id, upstream.c.customer_id, upstream.c.customer_resource_uri)).all()
    by_customer: dict[str, list[int]] = {}
    for row_id, customer_id, customer_resource_uri in rows:
        by_customer.setdefault(customer_id, []).append(row_id)
        found = _retail_customer(customer_resource_uri)
        if found is not None:
            bind.execute(upstream.update().where(upstream.c.id == row_id).values(retail_customer=found))
    for name in ("data_objects", "usage_segments"):
        table = sa.table(name, sa.column("customer_id"), sa.column("upstream_id"))
        for customer_id, ids in by_customer.items():
            if len(ids) == 1:  # the customer's data can only have come through this authorization
                bind.execute(table.update().where(table.c.customer_id == customer_id).values(upstream_id=ids[0]))


def _drop_columns(table: str, *columns: str) -> None:
    """``ALTER TABLE … DROP COLUMN`` wherever the database has it (SQLite since 3.35): SQLite's batch mode would copy
    the table instead, which is slow for usage segments and fails for ``grants``, which other tables reference while
    foreign keys are on."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or (bind.dialect.server_version_info or (0,)) >= (3, 35):
        for column in columns:
            op.drop_column(table, column)
        return
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.drop_column(column)


def downgrade() -> None:
    _drop_columns("jobs", "warning")
    with op.batch_alter_table("upstream_usage_points", schema=None) as batch_op:
        batch_op.drop_index("uq_upstream_usage_points_upstream_point")
        batch_op.drop_index("ix_upstream_usage_points_custodian_point")
        batch_op.drop_index(batch_op.f("ix_upstream_usage_points_upstream_id"))
    op.drop_table("upstream_usage_points")
    with op.batch_alter_table("upstream_authorizations", schema=None) as batch_op:
        batch_op.drop_index("ix_upstream_authorizations_custodian_customer")
    _drop_columns("upstream_authorizations", "retail_customer")
    # Downgrading merges the data sets back into one per customer: grant data sets' rows would then be read by
    # every grant of the customer, so they go (the grants' next fetches bring their data again).
    for table, old_index, new_index, columns in (
            ("usage_segments", "ix_usage_segments_customer_start", "ix_usage_segments_customer_set_start",
             ["customer_id", "segment_start"]),
            ("data_objects", "ix_data_objects_customer_kind", "ix_data_objects_customer_set_kind",
             ["customer_id", "kind"])):
        op.execute(sa.text(f"DELETE FROM {table} WHERE data_set <> ''"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(new_index)
            batch_op.create_index(old_index, columns, unique=False)
        _drop_columns(table, "upstream_id", "data_set")
    _drop_columns("grants", "data_set")
