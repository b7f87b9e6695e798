"""Baseline: the schema as it stood when Alembic took it over, and the audit chain's genesis head.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-04

Every schema change from here on is a NEW revision in this folder (never an edit of one that has
shipped): change the tables in ``gateway/store/db.py``, then write ``0002_<what>.py`` with
``down_revision = "0001_baseline"`` (``python -m gateway.store.migrations revision -m "<what>"``
starts one from the template). ``tests/test_migrations.py`` upgrades empty SQLite and PostgreSQL
databases to head and fails while the models and the revisions disagree.

Written out by hand (not ``metadata.create_all``), so that it stays what it was when later
revisions change the models. Times are BigInteger seconds, documents JSON on both engines.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "requesters",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_zh", sa.String(200)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON()),
        sa.Column("webhook_url", sa.String(500)),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "citizens",
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("hkid", sa.String(12), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_id"),
        sa.UniqueConstraint("hkid"),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(40), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("data_items", sa.JSON(), nullable=False),
        sa.Column("access", sa.String(16), nullable=False),
        sa.Column("duration", sa.String(32)),
        sa.Column("authorization_details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", sa.BigInteger()),
        sa.Column("expires_at", sa.BigInteger()),
        sa.Column("ended_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("consent_id"),
        sa.ForeignKeyConstraint(["client_id"], ["requesters.client_id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["citizens.subject_id"]),
    )
    op.create_index("ix_consents_subject", "consents", ["subject_id"])
    op.create_table(
        "pushed_requests",
        sa.Column("request_uri", sa.String(120), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(40), nullable=False),
        sa.Column("redirect_uri", sa.String(500), nullable=False),
        sa.Column("state", sa.String(500)),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("request_uri"),
        sa.ForeignKeyConstraint(["consent_id"], ["consents.consent_id"]),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(40), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.String(500), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("code_hash"),
        sa.ForeignKeyConstraint(["consent_id"], ["consents.consent_id"]),
    )
    op.create_table(
        "tokens",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("consent_id", sa.String(40), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger()),
        sa.PrimaryKeyConstraint("token_id"),
        sa.ForeignKeyConstraint(["consent_id"], ["consents.consent_id"]),
    )
    op.create_index("ix_tokens_code", "tokens", ["code_hash"])
    op.create_index("ix_tokens_consent", "tokens", ["consent_id"])
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(64)),
        sa.Column("subject", sa.String(64)),
        sa.Column("consent_id", sa.String(40)),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("route", sa.String(32)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_consent", "audit_entries", ["consent_id"])
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64)),
        sa.PrimaryKeyConstraint("id"),
    )
    # the chain's head before its first entry (gateway/audit/chain.py)
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_consent", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_index("ix_tokens_consent", table_name="tokens")
    op.drop_index("ix_tokens_code", table_name="tokens")
    op.drop_table("tokens")
    op.drop_table("authorization_codes")
    op.drop_table("pushed_requests")
    op.drop_index("ix_consents_subject", table_name="consents")
    op.drop_table("consents")
    op.drop_table("citizens")
    op.drop_table("requesters")
