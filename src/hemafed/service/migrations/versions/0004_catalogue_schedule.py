"""the catalogue's refresh schedule: when the next refresh is due, which hub process holds a
refresh in flight (restart-safe: a claim left by a killed process is released on start), and
the outcome of the last attempt with its reason (a refused refresh is recorded, rescheduled)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),  # one row: the current plan's
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("next_due", sa.DateTime(timezone=True), nullable=True),  # NULL: by hand
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_trigger", sa.String(16), nullable=True),
        sa.Column("last_outcome", sa.String(16), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("catalogue_schedule")
