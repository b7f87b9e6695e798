"""The request that asked for a job, so the job's log lines (and its calls to the department
services) carry the same request id.

Revision ID: 0008_outbox_request_id
Revises: 0007_notice_and_events
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_outbox_request_id"
down_revision = "0007_notice_and_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("request_id", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("request_id")
