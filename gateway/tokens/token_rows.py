"""Token rows: the one module that writes the ``tokens`` table.

An access token's row is keyed by its ``jti``; a refresh token's by the SHA-256 of the token (the
token itself is never stored). Every row remembers the consent it serves and the authorization
code it descends from (its *family*). A row is never deleted; ending it sets ``revoked_at``.
Revocations that cover several rows lock them in ``token_id`` order, the ledger's lock order
(``gateway/consent/ledger.py``): token rows before the consent row.
"""
from __future__ import annotations

import hashlib

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from gateway.store.db import tokens

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
