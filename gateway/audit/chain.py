"""Append to and verify the audit chain.

Each entry is canonical JSON (sorted keys, no spaces, UTF-8) of its fields plus ``prev_hash``;
its ``hash`` is SHA-256 over that. The head row (``audit_head``) is updated first in the
writer's transaction, which takes a row lock on PostgreSQL and the write lock on SQLite, so two
writers can never chain to the same predecessor. Entries hold item ids, never values.
"""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from gateway.clock import rfc3339
from gateway.store.db import GENESIS_HASH, audit_entries, audit_head

FIELDS = ("seq", "at", "event", "client_id", "subject", "consent_id", "items", "route", "outcome")


def canonical(entry: dict) -> bytes:
    body = {k: entry[k] for k in FIELDS}
    body["prev_hash"] = entry["prev_hash"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Built once: the append runs on every data release.
_TAKE_HEAD = (update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq + 1)
              .returning(audit_head.c.seq, audit_head.c.hash))
_INSERT = audit_entries.insert()
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1).values(hash=bindparam("new_hash"))
# PostgreSQL: the insert and the head's move in one statement (one round trip fewer).
_INSERTED = (audit_entries.insert()
             .values({c.name: bindparam("e_" + c.name, type_=c.type)
                      for c in audit_entries.columns})
             .returning(audit_entries.c.hash).cte("inserted"))
_INSERT_AND_MOVE_HEAD = (update(audit_head).where(audit_head.c.id == 1)
                         .values(hash=select(_INSERTED.c.hash).scalar_subquery())
                         .add_cte(_INSERTED))


def append(conn: Connection, now: int, event: str, *, client_id=None, subject=None,
           consent_id=None, items=(), route=None, outcome="ok") -> int:
    """Append one entry inside the caller's transaction; answer its sequence number."""
    head = conn.execute(_TAKE_HEAD).one()
    entry = {"seq": head.seq, "at": rfc3339(now), "event": event, "client_id": client_id,
             "subject": subject, "consent_id": consent_id, "items": sorted(items),
             "route": route, "outcome": outcome, "prev_hash": head.hash}
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    if conn.dialect.name == "postgresql":
        conn.execute(_INSERT_AND_MOVE_HEAD, {"e_" + k: v for k, v in entry.items()})
    else:
        conn.execute(_INSERT, entry)
        conn.execute(_MOVE_HEAD, {"new_hash": entry["hash"]})
    return head.seq


class BrokenChain(Exception):
    def __init__(self, seq: int, reason: str):
        super().__init__(f"audit entry {seq}: {reason}")
        self.seq = seq


def verify(conn: Connection) -> int:
    """Check every entry and the head; answer the count or raise BrokenChain at the first break."""
    prev, expected_seq = GENESIS_HASH, 1
    for row in conn.execute(select(audit_entries).order_by(audit_entries.c.seq)).mappings():
        entry = dict(row)
        if entry["seq"] != expected_seq:
            raise BrokenChain(expected_seq, "missing or reordered")
        if entry["prev_hash"] != prev:
            raise BrokenChain(entry["seq"], "does not chain to the entry before it")
        if hashlib.sha256(canonical(entry)).hexdigest() != entry["hash"]:
            raise BrokenChain(entry["seq"], "content does not match its hash")
        prev, expected_seq = entry["hash"], expected_seq + 1
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
    if head.seq != expected_seq - 1 or head.hash != prev:
        raise BrokenChain(expected_seq, "the log was truncated after this point")
    return expected_seq - 1


def for_consent(conn: Connection, consent_id: str) -> list[dict]:
    rows = conn.execute(select(audit_entries).where(audit_entries.c.consent_id == consent_id)
                        .order_by(audit_entries.c.seq))
    return [dict(r) for r in rows.mappings()]
