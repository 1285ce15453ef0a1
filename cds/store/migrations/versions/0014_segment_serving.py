"""usage segments keep what the listing serves them from when a grant keeps them whole (issue 15 item 1)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 00:30:00

``serving`` (the segment's JSON after its id and timestamps) and ``serving_shape`` (what a grant's decision reads)
are computed from the stored body by ``cds.projection.segment_serving``, as ingest now writes them. Existing rows
are filled here, in batches of ids (bodies read and written a batch at a time); a row left NULL (a body with no
such form) is served from its body, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds.projection import segment_serving

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("serving", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("serving_shape", sa.Text(), nullable=True))
    bind = op.get_bind()
    segments = sa.table("usage_segments", sa.column("segment_id"), sa.column("body"), sa.column("serving"),
                        sa.column("serving_shape"))
    after = ""
    while True:
        rows = bind.execute(sa.select(segments.c.segment_id, segments.c.body).where(segments.c.segment_id > after)
                            .order_by(segments.c.segment_id).limit(BATCH)).all()
        if not rows:
            break
        filled = []
        for segment_id, body in rows:
            serving = segment_serving(body)
            if serving is not None:
                filled.append({"id": segment_id, "serving": serving[0], "shape": serving[1]})
        if filled:
            bind.execute(segments.update().where(segments.c.segment_id == sa.bindparam("id"))
                         .values(serving=sa.bindparam("serving"), serving_shape=sa.bindparam("shape")), filled)
        after = rows[-1][0]


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or (bind.dialect.server_version_info or (0,)) >= (3, 35):
        op.drop_column("usage_segments", "serving_shape")
        op.drop_column("usage_segments", "serving")
        return
    with op.batch_alter_table("usage_segments", schema=None) as batch_op:
        batch_op.drop_column("serving_shape")
        batch_op.drop_column("serving")
