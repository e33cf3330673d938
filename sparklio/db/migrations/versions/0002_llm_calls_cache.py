"""llm_calls: the response cache's hits and what they saved

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 14:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows logged before this revision were not cached: nothing saved
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache", sa.String(length=8), nullable=True))
        batch_op.add_column(
            sa.Column("saved_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("saved_usd", sa.Float(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.drop_column("saved_usd")
        batch_op.drop_column("saved_tokens")
        batch_op.drop_column("cache")
