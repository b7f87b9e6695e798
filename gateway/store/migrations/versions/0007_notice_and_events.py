"""The consent's notice (the digest of the consent screen the citizen saw, and what it showed),
and the delivery state of the revocation event pushed to the requester.

Revision ID: 0007_notice_and_events
Revises: 0006_cdi_queries
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_notice_and_events"
down_revision = "0006_cdi_queries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("notice_digest", sa.String(80)))
        batch.add_column(sa.Column("notice", sa.JSON()))
        batch.add_column(sa.Column("event_delivery", sa.String(16)))
        batch.add_column(sa.Column("event_attempts", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("next_event_at", sa.BigInteger()))
        batch.add_column(sa.Column("event_error", sa.String(200)))
    op.create_index("ix_consents_event_delivery", "consents", ["event_delivery", "next_event_at"])


def downgrade() -> None:
    op.drop_index("ix_consents_event_delivery", table_name="consents")
    with op.batch_alter_table("consents") as batch:
        for name in ("event_error", "next_event_at", "event_attempts", "event_delivery",
                     "notice", "notice_digest"):
            batch.drop_column(name)
