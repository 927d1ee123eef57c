"""site catalogue entries: what each site publishes for feasibility

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("catalogue", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("catalogue_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("catalogue_time")
        batch.drop_column("catalogue")
