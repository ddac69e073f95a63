"""idempotency keys: the request each key named, and the results stored under it, one per uploaded file

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("station", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "idempotency_results",
        sa.Column("station", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("item", sa.Integer, primary_key=True),
        sa.Column(
            "inspection_id",
            sa.String(32),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.ForeignKeyConstraint(
            ["station", "key"], ["idempotency_keys.station", "idempotency_keys.key"], ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    for table in ("idempotency_results", "idempotency_keys"):
        op.drop_table(table)
