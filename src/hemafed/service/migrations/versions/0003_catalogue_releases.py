"""the catalogue through the secure path: the standing plan, the sites' signed approvals of
it, the released (rounded, suppressed, DP) counts; a site's public description replaces the
officer-published counts of 0002 (dropped: they were not computed through the secure path)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_plans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "catalogue_approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.site_id"), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("officer", sa.String(64), nullable=False),
        sa.Column("signed_payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("site_id", "spec_sha256"),
    )
    op.create_table(
        "catalogue_releases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("refresh", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=True),  # NULL: the network totals
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("description", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("description_time", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.drop_column("catalogue_time")
        batch.drop_column("catalogue")


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("catalogue", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("catalogue_time", sa.DateTime(timezone=True), nullable=True))
        batch.drop_column("description_time")
        batch.drop_column("description")
    op.drop_table("catalogue_releases")
    op.drop_table("catalogue_approvals")
    op.drop_table("catalogue_plans")
