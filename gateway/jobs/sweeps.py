"""Sweeps: write the ``expired`` transition for consents past their end, so the ledger and
the audit chain say so (reads already treat them as expired the moment they pass)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select

from gateway import runtime
from gateway.consent import ledger, liveness
from gateway.consent.lifecycle import Status, TransitionRefused
from gateway.store.db import consents, pushed_requests

if TYPE_CHECKING:
    from gateway.instance import Gateway


def expire_consents(gw: Gateway | None = None, limit: int = 500) -> int:
    """The sweep. ``gw`` is the process's gateway when not given: an operator's cron that
    enqueues ``gateway.jobs.sweeps.expire_consents`` with no arguments (as the README told them
    before the worker asked for it itself) keeps working."""
    gw = gw or runtime.current()
    now = gw.clock.now()
    with gw.db.connect() as conn:
        stale = conn.execute(
            select(consents.c.consent_id)
            .outerjoin(pushed_requests, pushed_requests.c.consent_id == consents.c.consent_id)
            .where(or_(liveness.lapsed_clause(consents, now),
                       and_(consents.c.status == Status.REQUESTED.value,
                            pushed_requests.c.expires_at <= now)))
            .limit(limit)).scalars().all()
    done = 0
    for consent_id in stale:
        def expire(conn, consent_id=consent_id):
            consent = ledger.get(conn, consent_id)
            ledger.transition(conn, now, consent, "expired", route="sweep",
                              subject=ledger.subject_of(gw, consent))

        try:
            gw.in_transaction(expire)  # a race lost to a revocation is run again
            done += 1
        except TransitionRefused:
            continue  # changed meanwhile (revoked, decided): nothing to do
    return done
