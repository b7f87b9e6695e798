"""Is this consent live? The one rule, in its Python and its SQL forms side by side.

A consent is *live* — data may be released under it, tokens issued or refreshed for it — when
its status is ``approved`` and its expiry lies ahead. An approved consent whose expiry has come
counts as ``expired`` at once, before any sweep writes the transition; an approved consent with
no expiry (which the ledger never writes) is not live. Adding a status (a paused consent, say)
means editing this module: ``tests/test_consent_liveness.py`` checks that the Python and SQL
forms agree on every status and every edge of expiry, on SQLite and on PostgreSQL.
"""
from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import and_, or_
from sqlalchemy.sql import ColumnElement

from .lifecycle import Status

LIVE = Status.APPROVED.value


def is_live(consent: Mapping, now: int) -> bool:
    return consent["status"] == LIVE and consent["expires_at"] is not None \
        and consent["expires_at"] > now


def status_now(consent: Mapping, now: int) -> str:
    """The status as the citizen and the requester see it now (lapsed counts as expired)."""
    if consent["status"] == LIVE and not is_live(consent, now):
        return Status.EXPIRED.value
    return consent["status"]


def lapsed(consent: Mapping, now: int) -> bool:
    """Approved, but no longer live: ending it now is its expiry, not a revocation."""
    return consent["status"] == LIVE and not is_live(consent, now)


def live_clause(table, now) -> ColumnElement:
    """SQL form of ``is_live`` for a table with ``status`` and ``expires_at`` columns; ``now``
    is an integer or a bind parameter."""
    return and_(table.c.status == LIVE, table.c.expires_at > now)


def lapsed_parts(table, now) -> list[ColumnElement]:
    """``lapsed_clause`` as disjoint parts that each read one range of the (status, expires_at)
    index in its order: the approvals whose expiry has come, and those with none. A statement
    that must stay on that index (the expiry sweep at a million consents) reads each part on
    its own — an OR of them leaves the planner free to scan the whole table."""
    return [and_(table.c.status == LIVE, table.c.expires_at <= now),
            and_(table.c.status == LIVE, table.c.expires_at.is_(None))]


def lapsed_clause(table, now) -> ColumnElement:
    """SQL form of "approved, but no longer live": what the expiry sweep ends."""
    return or_(*lapsed_parts(table, now))


# The same rule in SQL text, for hand-written statements (the one-statement release); the
# statement binds ``:now``. Kept equal to ``live_clause`` by the agreement test.
LIVE_SQL = f"status = '{LIVE}' AND expires_at > :now"
