"""brand_kits: a brand's voice, words, claims, colours and type, per user or shared

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "brand_kits",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("voice", sa.String(length=300), nullable=False),
        sa.Column("words_to_use", sa.JSON(), nullable=False),
        sa.Column("words_to_avoid", sa.JSON(), nullable=False),
        sa.Column("claims_to_avoid", sa.JSON(), nullable=False),
        sa.Column("palette", sa.JSON(), nullable=False),
        sa.Column("typography", sa.String(length=200), nullable=False),
        sa.Column("example_copy", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_brand_kits_user_id", "brand_kits", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_brand_kits_user_id", table_name="brand_kits")
    op.drop_table("brand_kits")
