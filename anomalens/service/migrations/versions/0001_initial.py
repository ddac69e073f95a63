"""inspections, their images, chat messages and operator feedback

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("station", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False, index=True),
        sa.Column("image_name", sa.String(255), nullable=False),
        sa.Column("anomalous", sa.Boolean, nullable=False, index=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("defect_types", sa.String(512), nullable=False),
        sa.Column("explanation_source", sa.String(32), nullable=False),
        sa.Column("feedback_status", sa.String(32), nullable=True, index=True),
        sa.Column("record", sa.JSON, nullable=False),
    )
    op.create_table(
        "inspection_images",
        sa.Column(
            "inspection_id", sa.String(32), sa.ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.String(32),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("source", sa.String(32), nullable=True),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.String(32),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("region_index", sa.Integer, nullable=True),
        sa.Column("defect_type", sa.String(128), nullable=True),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("history_case_ids", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("feedback", "chat_messages", "inspection_images", "inspections"):
        op.drop_table(table)
