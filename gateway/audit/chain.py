"""Append to and verify the audit chain.

An entry's *body* is canonical JSON (sorted keys, no spaces, UTF-8) of what happened: when,
which event, which client, which subject pseudonym, which consent, which item ids, which route,
which outcome — never a value. Its hash links it to the one before:

    hash = SHA-256( prev_hash ":" seq ":" body )      (hex)

so editing, deleting, reordering or truncating any entry breaks ``verify``. The head row
(``audit_head``: last seq, last hash) is moved first in the writer's transaction, which takes a
row lock on PostgreSQL and the write lock on SQLite: two writers never chain to the same
predecessor. On PostgreSQL the same link is computed in SQL (``sha256()``), so a data release
can check its consent, move the head and insert its entry in one statement (``release_sql``).
"""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection

from gateway.clock import rfc3339
from gateway.consent.liveness import LIVE_SQL
from gateway.store.db import GENESIS_HASH, audit_entries, audit_head

BODY_FIELDS = ("at", "event", "client_id", "subject", "consent_id", "items", "route", "outcome")


def body_of(entry: dict) -> str:
    return json.dumps({k: entry[k] for k in BODY_FIELDS}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def link(prev_hash: str, seq: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}:{seq}:{body}".encode("utf-8")).hexdigest()


def new_entry(now: int, event: str, *, client_id=None, subject=None, consent_id=None,
              items=(), route=None, outcome="ok") -> dict:
    return {"at": rfc3339(now), "event": event, "client_id": client_id, "subject": subject,
            "consent_id": consent_id, "items": sorted(items), "route": route,
            "outcome": outcome}


# SQLite: the head taken, the entry inserted, the head moved (three statements, one lock).
_TAKE_HEAD = (update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq + 1)
              .returning(audit_head.c.seq, audit_head.c.hash))
_INSERT = audit_entries.insert()
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1).values(hash=bindparam("new_hash"))


# PostgreSQL computes the same link with sha256(), so the head's move and the entry's insert
# are one statement. SET expressions read the old row: ``hash`` there is the predecessor's.
_HEAD_AND_INSERT = """
head AS (
    UPDATE audit_head
    SET seq = seq + 1,
        hash = encode(sha256(convert_to(hash || ':' || (seq + 1)::text || ':' || :body,
                                        'UTF8')), 'hex'),
        prev_hash = hash
    WHERE id = 1 {condition}
    RETURNING seq, prev_hash, hash
)
INSERT INTO audit_entries (seq, at, event, client_id, subject, consent_id, items, route,
                           outcome, prev_hash, hash)
SELECT seq, :at, :event, :client_id, :subject, :consent_id, CAST(:items AS JSON), :route,
       :outcome, prev_hash, hash FROM head
RETURNING seq
"""
APPEND_SQL = text("WITH " + _HEAD_AND_INSERT.format(condition=""))
# A data release in one statement, run in autocommit: re-check the consent and its token (the
# token row locked before the consent row, the ledger's lock order, so a concurrent revocation
# waits or is seen), then move the head and insert the entry. Nothing is written unless the
# consent is still live.
RELEASE_SQL = text("""
WITH live AS (
    UPDATE consents SET status = status
    WHERE consent_id = :consent_id AND """ + LIVE_SQL + """
      AND EXISTS (SELECT 1 FROM tokens WHERE token_id = :jti AND revoked_at IS NULL
                  FOR NO KEY UPDATE)
    RETURNING consent_id
), """ + _HEAD_AND_INSERT.format(condition="AND EXISTS (SELECT 1 FROM live)"))


def _sql_params(entry: dict, **extra) -> dict:
    return dict(entry, items=json.dumps(entry["items"]), body=body_of(entry), **extra)


def append(conn: Connection, now: int, event: str, **fields) -> int:
    """Append one entry inside the caller's transaction; answer its sequence number."""
    entry = new_entry(now, event, **fields)
    if conn.dialect.name == "postgresql":
        return conn.execute(APPEND_SQL, _sql_params(entry)).scalar_one()
    head = conn.execute(_TAKE_HEAD).one()
    entry.update(seq=head.seq, prev_hash=head.hash,
                 hash=link(head.hash, head.seq, body_of(entry)))
    conn.execute(_INSERT, entry)
    conn.execute(_MOVE_HEAD, {"new_hash": entry["hash"]})
    return head.seq


def release_sql(conn: Connection, now: int, jti: str, **fields) -> int | None:
    """PostgreSQL: the release's whole write in one round trip; None when the consent or the
    token is no longer live (nothing was written)."""
    entry = new_entry(now, "data.released", **fields)
    return conn.execute(RELEASE_SQL, _sql_params(entry, now=now, jti=jti)).scalar()


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
        if link(prev, entry["seq"], body_of(entry)) != entry["hash"]:
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
