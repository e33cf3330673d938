"""limits and budgets: requests and tokens per minute, USD per day and month, on API keys
and users (NULL: unlimited)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 17:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("api_keys", "users")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("rpm", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("tpm", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("usd_per_day", sa.Float(), nullable=True))
        op.add_column(table, sa.Column("usd_per_month", sa.Float(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for column in ("usd_per_month", "usd_per_day", "tpm", "rpm"):
                batch.drop_column(column)
