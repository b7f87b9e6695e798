"""The CDI bridge: an FI's allowed callback URLs, and its queries (status, sealed result,
callback delivery).

Revision ID: 0006_cdi_queries
Revises: 0005_pushed_requests_consent
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_cdi_queries"
down_revision = "0005_pushed_requests_consent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requesters") as batch:
        batch.add_column(sa.Column("callback_urls", sa.JSON()))
    op.create_table(
        "cdi_queries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False,
                  autoincrement=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("query_id", sa.String(100), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(40), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("token_exp", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.JSON()),
        sa.Column("callback_url", sa.String(2000)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.JSON()),
        sa.Column("result", sa.Text()),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger()),
        sa.Column("collected_at", sa.BigInteger()),
        sa.Column("purged_at", sa.BigInteger()),
        sa.Column("delivery", sa.String(16)),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("next_delivery_at", sa.BigInteger()),
        sa.Column("delivery_error", sa.String(200)),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "query_id", name="uq_cdi_query"),
    )
    op.create_index("ix_cdi_delivery", "cdi_queries", ["delivery", "next_delivery_at"])
    op.create_index("ix_cdi_finished", "cdi_queries", ["finished_at"])
    op.create_index("ix_cdi_collected", "cdi_queries", ["collected_at"])


def downgrade() -> None:
    op.drop_index("ix_cdi_collected", table_name="cdi_queries")
    op.drop_index("ix_cdi_finished", table_name="cdi_queries")
    op.drop_index("ix_cdi_delivery", table_name="cdi_queries")
    op.drop_table("cdi_queries")
    with op.batch_alter_table("requesters") as batch:
        batch.drop_column("callback_urls")
