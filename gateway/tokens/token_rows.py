"""Token rows: the one module that writes the ``tokens`` table.

An access token's row is keyed by its ``jti``; a refresh token's by the SHA-256 of the token (the
token itself is never stored). Every row remembers the consent it serves and the authorization
code it descends from (its *family*). A row is never deleted; ending it sets ``revoked_at``.
Revocations that cover several rows lock them in ``token_id`` order, the ledger's lock order
(``gateway/consent/ledger.py``): token rows before the consent row.
"""
from __future__ import annotations

import hashlib

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection

from gateway.audit import entries
from gateway.consent.liveness import LIVE_SQL
from gateway.store.db import tokens
from gateway.store.prepared import Prepared, compiled

ACCESS, REFRESH = "access", "refresh"


def refresh_id(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest()


def issue(conn: Connection, rows: list[dict]) -> None:
    """Insert the rows of one token response (access, and refresh for ongoing) in one statement."""
    conn.execute(tokens.insert(), rows)


def find(conn: Connection, token_id: str, kind: str) -> dict | None:
    row = conn.execute(select(tokens).where(tokens.c.token_id == token_id,
                                            tokens.c.kind == kind)).mappings().first()
    return dict(row) if row else None


def spend(conn: Connection, token_id: str, now: int) -> bool:
    """Rotate: end the presented refresh token; False if it was already ended."""
    return conn.execute(update(tokens).where(tokens.c.token_id == token_id,
                                             tokens.c.revoked_at.is_(None))
                        .values(revoked_at=now)).rowcount == 1


def revoke(conn: Connection, token_id: str, now: int) -> None:
    conn.execute(update(tokens).where(tokens.c.token_id == token_id,
                                      tokens.c.revoked_at.is_(None)).values(revoked_at=now))


def _revoke_where(conn: Connection, now: int, *conditions, skip_locked: bool = False) -> None:
    live = (select(tokens.c.token_id).where(*conditions, tokens.c.revoked_at.is_(None))
            .order_by(tokens.c.token_id).with_for_update(skip_locked=skip_locked))
    conn.execute(update(tokens).where(tokens.c.token_id.in_(live)).values(revoked_at=now))


def revoke_for_consent(conn: Connection, consent_id: str, now: int, *,
                       skip_locked: bool = False) -> None:
    """Every live token of a consent (it was revoked or expired). ``skip_locked`` for a pass
    made while holding the consent row: a token row another transaction holds then is one a
    release waits with for that consent row — it will find the consent ended and release
    nothing — so waiting for it would only deadlock."""
    _revoke_where(conn, now, tokens.c.consent_id == consent_id, skip_locked=skip_locked)


def revoke_for_code(conn: Connection, code_hash: str, now: int) -> None:
    """Every live token descended from one authorization code (a reused code, a replayed
    refresh token)."""
    _revoke_where(conn, now, tokens.c.code_hash == code_hash)


# PostgreSQL, a code exchange's whole write in one statement run in autocommit: spend the code
# (unused, unexpired, this client's) while its consent is live — held FOR SHARE, so a revocation
# waits for the tokens and then revokes them, or is seen and nothing is written — and the
# requester's policy is the one the tokens were decided under; insert the access token's row and,
# for an ongoing consent, the refresh token's; insert the ``token.issued`` entry. All or nothing:
# when any check fails no row is written and the caller takes the transactional path, which says
# why (and spends a code that deserves it).
ISSUE_FOR_CODE_SQL = text("""
WITH taken AS (
    UPDATE authorization_codes SET used_at = :now
    WHERE code_hash = :code_hash AND client_id = :client_id AND used_at IS NULL
      AND expires_at > :now
      AND EXISTS (SELECT 1 FROM consents WHERE consent_id = :consent_id AND """ + LIVE_SQL + """
                  FOR SHARE)
      AND EXISTS (SELECT 1 FROM requesters WHERE client_id = :client_id
                  AND md5(policy::text) = :policy_digest)
    RETURNING code_hash
), issued AS (
    INSERT INTO tokens (token_id, kind, consent_id, client_id, code_hash, issued_at, expires_at)
    SELECT v.token_id, v.kind, :consent_id, :client_id, :code_hash, :now, v.expires_at
    FROM taken, (VALUES (CAST(:access_id AS varchar), 'access', CAST(:access_exp AS bigint)),
                        (CAST(:refresh_id AS varchar), 'refresh', CAST(:refresh_exp AS bigint)))
                AS v (token_id, kind, expires_at)
    WHERE v.token_id IS NOT NULL
)
""" + entries.INSERT_FROM.format(source="taken"))
_ISSUE_FOR_CODE = compiled(ISSUE_FOR_CODE_SQL)


def issue_for_code(prepared: Prepared, *, now: int, code_hash: str, policy_digest: str,
                   rows: list[dict], entry: dict) -> bool:
    """The one-statement exchange above; False when nothing was written."""
    access_row = rows[0]
    refresh_row = rows[1] if len(rows) > 1 else {"token_id": None, "expires_at": None}
    return prepared.one(_ISSUE_FOR_CODE, {
        **entry, "now": now, "code_hash": code_hash, "client_id": access_row["client_id"],
        "consent_id": access_row["consent_id"], "policy_digest": policy_digest,
        "access_id": access_row["token_id"], "access_exp": access_row["expires_at"],
        "refresh_id": refresh_row["token_id"], "refresh_exp": refresh_row["expires_at"],
    }) is not None
