"""Personal identifiers sealed at rest: the citizen's HKID as a keyed hash (for lookups) and an
AES-GCM ciphertext under a data key, the data keys wrapped by a key outside the database
(gateway/identifiers.py). The plain column stays, nullable, for rows sealed after this
migration: the gateway seals them at start, in batches that each commit (resumable), as the
key that seals them is not the database's to know.

Revision ID: 0009_sealed_identifiers
Revises: 0008_outbox_request_id
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_sealed_identifiers"
down_revision = "0008_outbox_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (SQLite rebuilds the table to change the column: db.upgrade runs migrations with its
    # foreign keys off, and checks them after)
    with op.batch_alter_table("citizens") as batch:
        batch.alter_column("hkid", existing_type=sa.String(12), nullable=True)
        batch.add_column(sa.Column("hkid_index", sa.String(64)))
        batch.add_column(sa.Column("hkid_sealed", sa.Text()))
        batch.create_unique_constraint("uq_citizens_hkid_index", ["hkid_index"])
    op.create_table(
        "data_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(8), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    sealed = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM citizens WHERE hkid IS NULL AND hkid_sealed IS NOT NULL")).scalar()
    if sealed:
        raise RuntimeError(f"{sealed} citizens are sealed (their HKID only in hkid_sealed): "
                           f"downgrading past 0009 would lose them; refused")
    op.drop_table("data_keys")
    with op.batch_alter_table("citizens") as batch:
        batch.drop_constraint("uq_citizens_hkid_index", type_="unique")
        batch.drop_column("hkid_sealed")
        batch.drop_column("hkid_index")
