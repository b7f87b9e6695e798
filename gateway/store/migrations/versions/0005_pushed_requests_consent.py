"""An index the expiry sweep's unanswered-request part can use: consent_id on pushed_requests —
without it the sweep's join reads the whole of pushed_requests (benchmarks/million.py: the sweep
6x slower at 10^6 consents).

Revision ID: 0005_pushed_requests_consent
Revises: 0004_consent_expiry_index
Create Date: 2026-12-11
"""
from __future__ import annotations

from alembic import op

revision = "0005_pushed_requests_consent"   # alembic_version holds 32 characters
down_revision = "0004_consent_expiry_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_pushed_requests_consent", "pushed_requests", ["consent_id"])


def downgrade() -> None:
    op.drop_index("ix_pushed_requests_consent", table_name="pushed_requests")
