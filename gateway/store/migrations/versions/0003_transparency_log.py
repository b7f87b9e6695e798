"""The audit log becomes a transparency log (RFC 9162 trees, signed checkpoints): entries are
inserted with the hash of their own content and nothing else (no chain head every writer
updates); a sequencer gives them their leaf index, per shard, and keeps the trees.

Entries written before keep their bytes (the same canonical JSON the chain hashed), go to shard
0 in their old order, and wait for the sequencer like new ones; the chain's head goes.

Revision ID: 0003_transparency_log
Revises: 0002_outbox_and_release_keys
Create Date: 2026-12-04
"""
from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0003_transparency_log"
down_revision = "0002_outbox_and_release_keys"
branch_labels = None
depends_on = None

BODY_FIELDS = ("at", "event", "client_id", "subject", "consent_id", "items", "route", "outcome")


def _id():
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log_entries",
        sa.Column("id", _id(), nullable=False, autoincrement=True),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("leaf_index", sa.BigInteger()),
        sa.Column("consent_id", sa.String(40)),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("shard", "leaf_index", name="uq_audit_leaf"),
    )
    conn = op.get_bind()
    old = sa.table("audit_entries", *(sa.column(c) for c in ("seq",) + BODY_FIELDS))
    new = sa.table("audit_log_entries", sa.column("shard"), sa.column("consent_id"),
                   sa.column("event"), sa.column("entry"), sa.column("leaf_hash"))
    rows = conn.execute(sa.select(old).order_by(old.c.seq)).mappings()
    batch = []
    for row in rows:
        items = row["items"] if isinstance(row["items"], list) else json.loads(row["items"])
        entry = json.dumps({**{k: row[k] for k in BODY_FIELDS}, "items": items},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        batch.append({"shard": 0, "consent_id": row["consent_id"], "event": row["event"],
                      "entry": entry,
                      "leaf_hash": hashlib.sha256(b"\x00" + entry.encode()).hexdigest()})
    if batch:
        conn.execute(new.insert(), batch)
    op.drop_index("ix_audit_consent", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("audit_head")
    op.rename_table("audit_log_entries", "audit_entries")
    op.create_index("ix_audit_consent", "audit_entries", ["consent_id"])
    op.create_index("ix_audit_pending", "audit_entries", ["shard", "leaf_index", "id"])
    op.create_table(
        "log_nodes",
        sa.Column("shard", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("level", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("span_end", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard", "level", "idx"),
    )
    op.create_index("ix_log_nodes_order", "log_nodes", ["shard", "span_end", "level"])
    op.create_table(
        "log_heads",
        sa.Column("shard", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("integrated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("id", _id(), nullable=False, autoincrement=True),
        sa.Column("iat", sa.BigInteger(), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the hash chain is not rebuilt from a transparency log")
