"""Writing and reading the audit log's entries (SPEC section 9).

An entry's bytes are canonical JSON (sorted keys, no spaces, UTF-8) of what happened: when,
which event, which client, which subject pseudonym, which consent, which item ids, which route,
which outcome — never a value. A writer inserts its entry, with ``leaf_hash`` = SHA-256(0x00 ||
bytes), in the same transaction as the change it records, and writes nothing else: no row that
every writer updates, so writers on many machines do not queue behind one another. The
sequencer (``gateway/audit/sequencer.py``) later gives each committed entry its place in its
shard's Merkle tree.

Shards: a citizen's entries go to one shard (chosen by a hash of the gateway's internal id for
the citizen, or of the consent while it has no citizen yet: a request not yet answered); the
engine carries the number of shards (``Config.log_shards``) as the execution option
``cdeg_log_shards``.
"""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from gateway.clock import rfc3339
from gateway.consent.liveness import LIVE_SQL
from gateway.store.db import audit_entries
from gateway.store.prepared import Prepared, compiled

BODY_FIELDS = ("at", "event", "client_id", "subject", "consent_id", "items", "route", "outcome")
APPENDED = "cdeg_log_appended"    # in a connection's info: this transaction wrote entries
SHARDS_OPTION = "cdeg_log_shards"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def body_of(entry: dict) -> str:
    return _CANONICAL({k: entry[k] for k in BODY_FIELDS})


def leaf_hash(body: str) -> str:
    return hashlib.sha256(b"\x00" + body.encode("utf-8")).hexdigest()


def new_entry(now: int, event: str, *, client_id=None, subject=None, consent_id=None,
              items=(), route=None, outcome="ok") -> dict:
    return {"at": rfc3339(now), "event": event, "client_id": client_id, "subject": subject,
            "consent_id": consent_id, "items": sorted(items), "route": route,
            "outcome": outcome}


def shard_of(key: str, shards: int) -> int:
    if shards <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % shards


def row_for(shards: int, now: int, event: str, *, citizen: str | None, **fields) -> dict:
    """An entry's column values (``shard``, ``consent_id``, ``event``, ``entry``, ``leaf_hash``),
    for a statement that inserts it with ``INSERT_FROM``."""
    return _row(shards, now, event, citizen, fields)


# The insert of one entry whose values ``row_for`` gave, from a CTE that yields a row only when
# the change it records was made: PostgreSQL's one-statement writes.
INSERT_FROM = """INSERT INTO audit_entries (shard, consent_id, event, entry, leaf_hash)
SELECT :shard, :consent_id, :event, :entry, :leaf_hash FROM {source}
RETURNING id"""


def _row(shards: int, now: int, event: str, citizen: str | None, fields: dict) -> dict:
    entry = new_entry(now, event, **fields)
    body = body_of(entry)
    return {"shard": shard_of(citizen or fields.get("consent_id") or "", shards),
            "consent_id": fields.get("consent_id"), "event": event, "entry": body,
            "leaf_hash": leaf_hash(body)}


def _shards(conn: Connection) -> int:
    return conn.get_execution_options().get(SHARDS_OPTION, 1)


def append(conn: Connection, now: int, event: str, *, citizen: str | None = None,
           **fields) -> None:
    """Insert one entry inside the caller's transaction. ``citizen``: the internal subject id,
    which picks the shard (the consent id does while there is none)."""
    conn.execute(audit_entries.insert(), _row(_shards(conn), now, event, citizen, fields))
    conn.info[APPENDED] = True


def appended(conn: Connection) -> bool:
    """Whether the transaction on ``conn`` wrote entries (and forget it)."""
    return bool(conn.info.pop(APPENDED, False))


# PostgreSQL, a data release in one statement run in autocommit: re-check the consent and its
# token and hold both rows with FOR SHARE until the entry commits (the token row first, the
# ledger's lock order), and check the requester's policy is still the one the release was decided
# under (its digest as read); then insert the entry. Nothing is written unless the consent is
# still live and the policy unchanged. FOR SHARE, not a write: releases of one consent do not
# queue behind one another's commit and leave no new row version behind, while a revocation's
# UPDATE waits for them — or, committed first, is what they see (READ COMMITTED re-checks a
# row updated meanwhile against the WHERE clause) and they release nothing.
RELEASE_SQL = text("""
WITH live AS (
    SELECT consent_id FROM consents
    WHERE consent_id = :consent_id AND """ + LIVE_SQL + """
      AND EXISTS (SELECT 1 FROM tokens WHERE token_id = :jti AND revoked_at IS NULL
                  FOR SHARE)
      AND EXISTS (SELECT 1 FROM requesters WHERE client_id = :client_id
                  AND md5(policy::text) = :policy_digest)
    FOR SHARE
)
""" + INSERT_FROM.format(source="live"))


def release_sql(conn: Connection, now: int, jti: str, policy_digest: str, *, citizen: str,
                **fields) -> int | None:
    """PostgreSQL: the release's whole write in one round trip; None when the consent or the
    token is no longer live or the policy changed (nothing was written)."""
    row = _row(_shards(conn), now, "data.released", citizen, fields)
    return conn.execute(RELEASE_SQL, dict(row, now=now, jti=jti, client_id=fields["client_id"],
                                          policy_digest=policy_digest)).scalar()


_RELEASE_PREPARED = compiled(RELEASE_SQL)


def release_prepared(prepared: Prepared, shards: int, now: int, jti: str, policy_digest: str, *,
                     citizen: str, **fields) -> int | None:
    """``release_sql`` as a statement prepared on psycopg (the data path's hot write)."""
    row = _row(shards, now, "data.released", citizen, fields)
    found = prepared.one(_RELEASE_PREPARED, dict(row, now=now, jti=jti,
                                                 client_id=fields["client_id"],
                                                 policy_digest=policy_digest))
    return None if found is None else found[0]


def released_for(conn: Connection, consent_ids: list[str]) -> dict[str, list[dict]]:
    """The ``data.released`` entries of several consents in one query, by consent, in the
    order they were written (the citizen's access log)."""
    out: dict[str, list[dict]] = {cid: [] for cid in consent_ids}
    if not consent_ids:
        return out
    rows = conn.execute(select(audit_entries.c.consent_id, audit_entries.c.shard,
                               audit_entries.c.leaf_index, audit_entries.c.entry)
                        .where(audit_entries.c.consent_id.in_(consent_ids),
                               audit_entries.c.event == "data.released")
                        .order_by(audit_entries.c.id))
    for r in rows:
        out[r.consent_id].append({**json.loads(r.entry), "shard": r.shard,
                                  "leaf_index": r.leaf_index})
    return out


def for_consent(conn: Connection, consent_id: str) -> list[dict]:
    """A consent's entries in the order they were written: each the entry's fields, with its
    ``shard``, ``leaf_index`` (None until sequenced) and ``entry`` (the bytes, as a string)."""
    rows = conn.execute(select(audit_entries.c.shard, audit_entries.c.leaf_index,
                               audit_entries.c.entry)
                        .where(audit_entries.c.consent_id == consent_id)
                        .order_by(audit_entries.c.id))
    return [{**json.loads(r.entry), "shard": r.shard, "leaf_index": r.leaf_index,
             "entry": r.entry} for r in rows]
