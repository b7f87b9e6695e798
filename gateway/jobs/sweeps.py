"""Sweeps: write the ``expired`` transition for consents past their end, so the ledger and
the audit chain say so (reads already treat them as expired the moment they pass)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Select, select, union_all

from gateway import runtime
from gateway.consent import ledger, liveness
from gateway.consent.lifecycle import Status, TransitionRefused
from gateway.store.db import consents, pushed_requests

if TYPE_CHECKING:
    from gateway.instance import Gateway


def stale_consents(now: int, limit: int = 500) -> Select:
    """The consents the sweep ends: approvals that lapsed (``liveness.lapsed_parts``) and
    requests whose pushed request expired unanswered, at most ``limit``. Each part is its own
    index-ordered read — (status, expires_at) on consents (the ORDER BY is what keeps the
    planner on it under the LIMIT), consent_id on pushed_requests —
    combined by UNION ALL under the LIMIT, so at a million consents the read stays on the
    indexes and stops when it has enough (one OR across a join lets the planner scan whole
    tables). Each part is wrapped as a subquery: SQLite takes no ORDER BY/LIMIT on a compound
    select's members otherwise."""
    lapsed = [select(consents.c.consent_id).where(part).order_by(consents.c.expires_at)
              .limit(limit) for part in liveness.lapsed_parts(consents, now)]
    unanswered = (select(consents.c.consent_id)
                  .join(pushed_requests, pushed_requests.c.consent_id == consents.c.consent_id)
                  .where(consents.c.status == Status.REQUESTED.value,
                         pushed_requests.c.expires_at <= now)
                  .limit(limit))
    return union_all(*(q.subquery().select() for q in (*lapsed, unanswered))).limit(limit)


def expire_consents(gw: Gateway | None = None, limit: int = 500) -> int:
    """The sweep. ``gw`` is the process's gateway when not given: an operator's cron that
    enqueues ``gateway.jobs.sweeps.expire_consents`` with no arguments (as the README told them
    before the worker asked for it itself) keeps working."""
    gw = gw or runtime.current()
    now = gw.clock.now()
    with gw.db.connect() as conn:
        stale = conn.execute(stale_consents(now, limit)).scalars().all()
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
