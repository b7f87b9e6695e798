"""``cdeg audit verify``: recompute every leaf and every tree from the entries' bytes, and check
them against what the database holds (leaf hashes, tree nodes, heads), against the latest
signed checkpoint, and — with ``--against`` — against a checkpoint someone kept earlier.

What passing proves: every sequenced entry's bytes are the ones its leaf hash was made from;
each shard's leaves are contiguous from 0; the stored nodes (from which proofs are served) and
heads are the trees those leaves make; the latest checkpoint was signed by a key of this
gateway's and commits to these trees; and a kept checkpoint's trees are prefixes of today's —
no entry it covered was edited, removed or reordered since. What it cannot prove alone: that
nobody who holds the signing key rewrote history and signed anew — a checkpoint kept outside
(by a requester, an auditor, a citizen) is what catches that.

Entries and nodes are streamed (server-side cursors on PostgreSQL): memory stays flat however
long the log.
"""
from __future__ import annotations

import base64
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from gateway.store.db import audit_entries, log_heads, log_nodes

from . import checkpoints, merkle, sequencer
from .entries import leaf_hash

if TYPE_CHECKING:
    from gateway.instance import Gateway

STREAM = {"stream_results": True, "yield_per": 5000}


class LogBroken(Exception):
    """The first thing that does not hold, named."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass
class Verified:
    entries: int = 0
    pending: int = 0
    shards: dict = field(default_factory=dict)   # shard -> tree size
    checkpoint_iat: int | None = None
    against_iat: int | None = None
    rechecked_from: dict = field(default_factory=dict)   # shard -> first leaf recomputed


def _targets(payload: dict | None, label: str) -> dict[int, dict[int, tuple[bytes, str]]]:
    out: dict[int, dict[int, tuple[bytes, str]]] = {}
    for shard in (payload or {}).get("shards", []):
        try:
            root = base64.b64decode(shard["root_hash"], validate=True)
        except ValueError as exc:
            raise LogBroken(label, f"shard {shard['shard']}: root_hash is not base64") from exc
        out.setdefault(shard["shard"], {})[shard["tree_size"]] = (root, label)
    return out


def verify(gw: Gateway, against: str | None = None, *, since_kept: bool = False) -> Verified:
    """The whole log; with ``since_kept`` (and ``against``) only what was added after the kept
    checkpoint: its trees are taken from the stored nodes, whose roots must be the kept ones —
    the consistency RFC 9162 proves — and the newer leaves and nodes are recomputed."""
    if since_kept and against is None:
        raise ValueError("checking only what is new needs a kept checkpoint")
    latest = checkpoints.latest(gw)
    if latest is None:
        latest_payload = None
    else:
        try:
            latest_payload = checkpoints.verify(gw, latest)
        except checkpoints.CheckpointRefused as exc:
            raise LogBroken("the latest checkpoint", exc.detail) from exc
    kept = checkpoints.verify(gw, against) if against is not None else None
    targets = _targets(latest_payload, "the latest checkpoint")
    for shard, sizes in _targets(kept, "the kept checkpoint").items():
        targets.setdefault(shard, {}).update(sizes)
    result = Verified(checkpoint_iat=(latest_payload or {}).get("iat"),
                      against_iat=(kept or {}).get("iat"))
    with _snapshot(gw) as conn:
        heads = {r.shard: r for r in conn.execute(select(log_heads))}
        shards = sorted(set(range(gw.config.log_shards)) | set(heads) | set(targets))
        for shard in shards:
            start = None
            if since_kept:
                kept_sizes = {s["shard"]: (s["tree_size"], base64.b64decode(s["root_hash"]))
                              for s in kept["shards"]}
                start = kept_sizes.get(shard)
            size = _verify_shard(conn, conn, shard, heads.get(shard), targets.get(shard, {}),
                                 start)
            result.shards[shard] = size
            result.entries += size
        result.pending = _check_pending(conn)
        result.rechecked_from = {s: (kept_sizes.get(s, (0,))[0] if since_kept else 0)
                                 for s in shards} if shards else {}
    return result


@contextmanager
def _snapshot(gw: Gateway):
    """One connection reading one snapshot of the log (entries, nodes and heads agree even
    while the sequencer goes on), taking no write lock."""
    if gw.db.dialect.name == "postgresql":
        with gw.db.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
        return
    with gw.reads.connect() as conn:   # SQLite: a deferred BEGIN reads one snapshot, no lock
        conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.exec_driver_sql("COMMIT")


def _verify_shard(entries_conn, nodes_conn, shard: int, head, targets: dict,
                  start: tuple[int, bytes] | None = None) -> int:
    """Check shard ``shard`` from leaf 0, or — ``start`` = (size, root) of a kept checkpoint —
    from that size on: the stored tree's state at that size must have the kept root, and only
    the leaves and nodes added since are recomputed."""
    expected = 0
    tree = merkle.Frontier()
    if start is not None:
        expected, kept_root = start
        try:
            tree = merkle.Frontier.from_nodes(expected, sequencer.TreeReader(nodes_conn, shard))
        except LookupError as exc:
            raise LogBroken("the kept checkpoint", f"shard {shard}: the log no longer holds "
                                                   f"the tree of {expected} entries") from exc
        if tree.root() != kept_root:
            raise LogBroken("the kept checkpoint", f"shard {shard} at size {expected} has "
                                                   f"another root: the log no longer extends it")
    nodes = iter(nodes_conn.execution_options(**STREAM).execute(
        select(log_nodes.c.level, log_nodes.c.idx, log_nodes.c.hash)
        .where(log_nodes.c.shard == shard, log_nodes.c.span_end > expected)
        .order_by(log_nodes.c.span_end, log_nodes.c.level)))
    rows = entries_conn.execution_options(**STREAM).execute(
        select(audit_entries.c.id, audit_entries.c.leaf_index, audit_entries.c.entry,
               audit_entries.c.leaf_hash)
        .where(audit_entries.c.shard == shard, audit_entries.c.leaf_index >= expected)
        .order_by(audit_entries.c.leaf_index))
    for entry_id, index, body, stored_hash in rows:
        if index != expected:
            raise LogBroken(f"shard {shard}, leaf {expected}", "missing, or the leaves reordered")
        if leaf_hash(body) != stored_hash:
            raise LogBroken(f"audit entry {entry_id} (shard {shard}, leaf {index})",
                            "its bytes do not match its leaf hash")
        for level, idx, value in tree.append(bytes.fromhex(stored_hash)):
            if level == 0:
                continue
            node = next(nodes, None)
            if node is None or (node.level, node.idx) != (level, idx) \
                    or node.hash != value.hex():
                raise LogBroken(f"tree node of shard {shard} at level {level}, index {idx}",
                                "does not match the entries below it")
        expected += 1
        target = targets.get(expected)
        if target is not None and tree.root() != target[0]:
            raise LogBroken(target[1], f"shard {shard} at size {expected} has another root: "
                                       f"the log no longer extends it")
    extra = next(nodes, None)
    if extra is not None:
        raise LogBroken(f"tree node of shard {shard} at level {extra.level}, index {extra.idx}",
                        "covers leaves the log does not have")
    for size, (_root, label) in targets.items():
        if start is not None and size < start[0]:
            continue   # before the kept checkpoint: not rechecked in an incremental run
        if size > expected:
            raise LogBroken(label, f"shard {shard} had {size} entries; the log now has "
                                   f"{expected}: entries were removed")
        if size == 0 and _root != merkle.EMPTY_ROOT:
            raise LogBroken(label, f"shard {shard}: an empty tree with another root")
    if head is not None and (head.tree_size != expected
                             or head.root_hash != tree.root().hex()):
        raise LogBroken(f"the head of shard {shard}", "is not the tree its leaves make")
    if head is None and expected:
        raise LogBroken(f"the head of shard {shard}", "missing")
    return expected


def _check_pending(conn) -> int:
    """Entries not yet sequenced: their bytes must match their hashes too."""
    count = 0
    for entry_id, body, stored_hash in conn.execution_options(**STREAM).execute(
            select(audit_entries.c.id, audit_entries.c.entry, audit_entries.c.leaf_hash)
            .where(audit_entries.c.leaf_index.is_(None)).order_by(audit_entries.c.id)):
        if leaf_hash(body) != stored_hash:
            raise LogBroken(f"audit entry {entry_id} (not yet sequenced)",
                            "its bytes do not match its leaf hash")
        count += 1
    return count



