"""The sequencer: gives committed entries their place in their shard's Merkle tree (RFC 9162
section 2.1), in batches, and keeps the tree's complete subtrees and head.

One sequencer per shard at a time: it holds the shard's lock for its batch (a PostgreSQL
advisory transaction lock; SQLite's write lock), so a second one waits and then finds the
entries taken. A batch — leaf indexes, new nodes, the head — commits as one transaction: a
sequencer killed mid-batch leaves nothing half-integrated, and the next one starts where the
head says. Each entry's leaf hash is recomputed from its bytes before it is integrated; an entry
whose stored hash does not match is not integrated (``verify`` names it).

Where it runs: in ``cdeg worker`` every ``log_every`` seconds; inline right after the commit
that wrote entries in the embedded default. Either way it then publishes a signed checkpoint
when the trees moved and the last one is ``checkpoint_every`` seconds old.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import json
from datetime import datetime

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection

from gateway.store.db import audit_entries, log_heads, log_nodes

from . import checkpoints, merkle
from .entries import leaf_hash

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.audit")

LOCK_SPACE = 0x4C4F47   # "LOG": pg_advisory_xact_lock(LOCK_SPACE, shard)


class TreeReader:
    """Stored hashes of one shard's perfect subtrees (level 0: the leaves), as ``merkle``
    asks for them."""

    def __init__(self, conn: Connection, shard: int):
        self.conn, self.shard = conn, shard
        self.reads = 0

    def __call__(self, level: int, index: int) -> bytes:
        self.reads += 1
        if level == 0:
            value = self.conn.execute(select(audit_entries.c.leaf_hash).where(
                audit_entries.c.shard == self.shard,
                audit_entries.c.leaf_index == index)).scalar()
        else:
            value = self.conn.execute(select(log_nodes.c.hash).where(
                log_nodes.c.shard == self.shard, log_nodes.c.level == level,
                log_nodes.c.idx == index)).scalar()
        if value is None:
            raise LookupError(f"shard {self.shard}: no stored node at level {level}, "
                              f"index {index}")
        return bytes.fromhex(value)


def head(conn: Connection, shard: int) -> tuple[int, bytes]:
    row = conn.execute(select(log_heads.c.tree_size, log_heads.c.root_hash)
                       .where(log_heads.c.shard == shard)).first()
    return (0, merkle.EMPTY_ROOT) if row is None else (row.tree_size, bytes.fromhex(row.root_hash))


def _lock(conn: Connection, shard: int) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, :shard)"),
                     {"space": LOCK_SPACE, "shard": shard})
    # SQLite: the transaction began IMMEDIATE (gateway/store/db.py): it holds the write lock


_PLACE_ALL = text("UPDATE audit_entries SET leaf_index = placed.leaf "
                  "FROM unnest(CAST(:ids AS bigint[]), CAST(:leaves AS bigint[])) "
                  "AS placed(id, leaf) WHERE audit_entries.id = placed.id")


def integrate(gw: Gateway, shard: int) -> int:
    """Integrate up to ``log_batch`` pending entries of ``shard``; answer how many."""
    now = gw.clock.now()
    with gw.transaction() as conn:
        _lock(conn, shard)
        pending = conn.execute(
            select(audit_entries.c.id, audit_entries.c.entry, audit_entries.c.leaf_hash)
            .where(audit_entries.c.shard == shard, audit_entries.c.leaf_index.is_(None))
            .order_by(audit_entries.c.id).limit(gw.config.log_batch)).all()
        if not pending:
            return 0
        size, _root = head(conn, shard)
        tree = merkle.Frontier.from_nodes(size, TreeReader(conn, shard))
        placed, nodes = [], []
        for row in pending:
            if leaf_hash(row.entry) != row.leaf_hash:
                log.error("audit entry %s of shard %s does not match its hash: not integrated",
                          row.id, shard)
                continue
            placed.append({"entry_id": row.id, "leaf": tree.size})
            for level, index, value in tree.append(bytes.fromhex(row.leaf_hash)):
                if level > 0:
                    nodes.append({"shard": shard, "level": level, "idx": index,
                                  "hash": value.hex(), "span_end": (index + 1) << level})
        if not placed:
            return 0
        if conn.dialect.name == "postgresql":   # one statement for the batch, not one a row
            conn.execute(_PLACE_ALL, {"ids": [p["entry_id"] for p in placed],
                                      "leaves": [p["leaf"] for p in placed]})
        else:
            conn.execute(update(audit_entries)
                         .where(audit_entries.c.id == bindparam("entry_id"))
                         .values(leaf_index=bindparam("leaf")), placed)
        if nodes:
            conn.execute(log_nodes.insert(), nodes)
        values = {"tree_size": tree.size, "root_hash": tree.root().hex(), "integrated_at": now}
        moved = conn.execute(update(log_heads).where(log_heads.c.shard == shard)
                             .values(**values)).rowcount
        if moved == 0:
            conn.execute(log_heads.insert().values(shard=shard, **values))
    return len(placed)


def integrate_all(gw: Gateway) -> int:
    """Every shard until none has entries waiting; then a checkpoint if it is due."""
    done = 0
    for shard in range(gw.config.log_shards):
        while True:
            count = integrate(gw, shard)
            done += count
            if count < gw.config.log_batch:
                break
    checkpoints.publish_if_due(gw)
    return done


def after_commit(gw: Gateway) -> None:
    """Embedded default: integrate right after a commit that wrote entries. Never fails the
    request that committed; what is left waits for the next commit or the background tending."""
    if not gw.config.inline_jobs:
        return
    try:
        integrate_all(gw)
    except Exception as exc:  # noqa: BLE001 - the commit stands
        log.warning("sequencing deferred: %s", type(exc).__name__)


def backlog_age(gw: Gateway) -> int | None:
    """Seconds since the oldest entry still waiting was written (None: nothing waits)."""
    with gw.reads.connect() as conn:
        oldest = conn.execute(select(audit_entries.c.entry).where(
            audit_entries.c.leaf_index.is_(None)).order_by(audit_entries.c.id).limit(1)).scalar()
    if oldest is None:
        return None
    written = datetime.fromisoformat(json.loads(oldest)["at"].replace("Z", "+00:00"))
    return max(0, gw.clock.now() - int(written.timestamp()))
