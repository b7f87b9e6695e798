"""Work after commit: a transaction that asks for a job (a CDI query, a webhook, a sweep) writes
an outbox row in itself; the row is handed on only once that transaction has committed, and
stays until the job has run.

    add(conn, now, job, args, key)      in the caller's transaction: the job is asked for
    relay(gw)                           after commit: committed rows that are not yet handed on
                                        go to RQ (a real Redis), or run here and now (embedded)
    run(outbox_id)                      what an RQ worker runs: the row's job, against the
                                        worker's gateway, marked done once it has succeeded
    done_in(conn, now)                  inside a job's last transaction: the row done with it

So a job can neither run before the transaction that asked for it commits (an uncommitted row
is invisible to ``relay``; a rolled-back one never existed) nor be lost after it: if the
process dies between the commit and the relay, or Redis is down, the row waits for the next
relay — after the next committing transaction, at the start of ``cdeg serve`` and every few
seconds in ``cdeg worker``, which also hands on again rows relayed long ago but never done (a
worker killed mid-job). A job may therefore run more than once: every job is idempotent (it
takes ids and re-reads the ledger), and ``key`` makes asking twice one row.

Job arguments are ids and numbers only, never personal data (SECURITY.md).
"""
from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gateway import runtime
from gateway.errors import StoreUnavailable
from gateway.store.db import outbox
from schemas.hkid import InvalidHKID, normalise

from .registry import GIVE_UP, JOBS

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")

ASKED = "cdeg_outbox_asked"   # set in a connection's info by add(): relay after this commit
OPEN = "cdeg_transaction"     # set by Gateway.transaction() while its transaction is open
RELAY_BATCH = 100             # attempts, staleness and the job timeout are in Config


class JobRefused(ValueError):
    """A job asked for that the registry does not know, or arguments that are not ids."""


_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}", re.ASCII)


def _is_hkid(value: str) -> bool:
    try:
        normalise(value)
    except InvalidHKID:
        return False
    return True


def _check(job: str, args: dict) -> None:
    if job not in JOBS:
        raise JobRefused(f"unknown job {job!r}")
    for name, value in args.items():
        if not isinstance(name, str) or not _ID.fullmatch(name) or isinstance(value, bool) \
                or not isinstance(value, (str, int)) \
                or (isinstance(value, str) and (not _ID.fullmatch(value) or _is_hkid(value))):
            raise JobRefused(f"job {job}: argument {name!r} must be an id or a number, "
                             f"never personal data")


def add(conn: Connection, now: int, job: str, args: dict, key: str) -> None:
    """Ask, inside the caller's transaction, for ``job(gw, **args)`` to run once it commits;
    ``key`` names the request: asking again with the same key adds nothing."""
    if not conn.info.get(OPEN):   # only there is the relay after the commit guaranteed
        raise JobRefused("ask for jobs inside gw.transaction(), so they follow its commit")
    _check(job, args)
    from gateway.logs import request_id
    values = dict(job=job, args=args, idempotency_key=key, created_at=now, attempts=0,
                  request_id=request_id())
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(outbox).values(**values)
                 .on_conflict_do_nothing(index_elements=["idempotency_key"]))
    conn.info[ASKED] = True


def asked(conn: Connection) -> bool:
    """Whether the transaction on ``conn`` asked for work (and forget it)."""
    return bool(conn.info.pop(ASKED, False))


def _due(config, now: int):
    return and_(outbox.c.done_at.is_(None), outbox.c.attempts < config.job_attempts,
                or_(outbox.c.relayed_at.is_(None),
                    outbox.c.relayed_at <= now - config.job_stale_after))


def relay(gw: Gateway, limit: int = RELAY_BATCH) -> int:
    """Hand on the committed rows that are due; answer how many. Inline (the embedded
    default) each job runs here, in turn; otherwise each is enqueued on RQ, and the rows are
    marked relayed in the same transaction that chose them (two relays never take the same
    row: PostgreSQL skips rows another relay holds, SQLite serialises the two)."""
    if gw.config.inline_jobs:
        with gw.reads.connect() as conn:
            ids = conn.execute(select(outbox.c.id).where(_due(gw.config, gw.clock.now()))
                               .order_by(outbox.c.id).limit(limit)).scalars().all()
        return sum(1 for outbox_id in ids if _run(gw, outbox_id, claim=_due(gw.config, gw.clock.now())))
    from gateway.store.queue import queue_for
    queue = queue_for(gw)
    with gw.transaction() as conn:
        now = gw.clock.now()
        query = select(outbox.c.id).where(_due(gw.config, now)).order_by(outbox.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = conn.execute(query).scalars().all()
        for outbox_id in ids:
            try:  # a second enqueue of a row (a relay that failed part-way, a stale row) is
                # harmless: run() takes a lease, and a done row is not run again
                queue.enqueue("gateway.jobs.outbox.run", outbox_id, job_id=job_id(gw, outbox_id),
                              job_timeout=gw.config.job_timeout, failure_ttl=3600, result_ttl=600)
            except Exception as exc:  # noqa: BLE001 - Redis errors: the rows wait, unrelayed
                raise StoreUnavailable("the job queue did not answer") from exc
        if ids:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(relayed_at=now))
    return len(ids)


def job_id(gw: Gateway, outbox_id: int) -> str:
    """The RQ job id of an outbox row. RQ keeps jobs under ``rq:job:<id>`` whatever the queue's
    name, so the id carries this gateway's Redis prefix (hashed: RQ takes ``[A-Za-z0-9_-]``
    only) — two gateways sharing one Redis never overwrite or drop each other's jobs."""
    import hashlib
    scope = hashlib.sha256(gw.config.redis_prefix.encode()).hexdigest()[:12]
    return f"outbox-{scope}-{outbox_id}"


# The row a job is running for, so the job can mark it done in its own last transaction — its
# effect and its done mark then commit together (``done_in``), and ``_run`` spares a
# transaction of its own.
_RUNNING: ContextVar[dict | None] = ContextVar("cdeg_outbox_running", default=None)


def _running(outbox_id: int):
    """Set while ``outbox_id``'s job runs; answers the token to ``finished`` with."""
    return _RUNNING.set({"id": outbox_id, "done": False})


def _finished(token) -> bool:
    """Unset; whether the job marked its row done itself."""
    state = _RUNNING.get()
    _RUNNING.reset(token)
    return bool(state and state["done"])


def done_in(conn, now: int) -> None:
    """Inside a job's transaction: its outbox row is done when this transaction commits (a job
    run outside the outbox — a test, an operator — has no row, and nothing is marked)."""
    state = _RUNNING.get()
    if state is not None:
        conn.execute(update(outbox).where(outbox.c.id == state["id"]).values(done_at=now))
        state["done"] = True


def _give_up(gw: Gateway, outbox_id: int, job: str, args: dict) -> None:
    """The job failed its last try: its give-up step (``registry.GIVE_UP``) ends what waits
    on it, and the row is done; a give-up that fails leaves both for the next ``give_up_stale``.
    (A job without a give-up step is left, not done, for an operator.)"""
    try:
        GIVE_UP[job](gw, **args)
        with gw.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.done_at.is_(None))
                         .values(done_at=gw.clock.now()))
    except Exception as exc:  # noqa: BLE001 - the next give_up_stale tries again
        log.warning("giving up job %s (outbox %s) deferred: %s", job, outbox_id,
                    type(exc).__name__)


def give_up_stale(gw: Gateway, limit: int = RELAY_BATCH) -> int:
    """Rows whose last try's lease ended without an outcome (its worker killed, its RQ job
    timed out): given up, so nothing waits on them for ever. ``cdeg worker`` runs this as it
    tends."""
    now = gw.clock.now()
    with gw.reads.connect() as conn:
        rows = conn.execute(select(outbox.c.id, outbox.c.job, outbox.c.args)
                            .where(outbox.c.done_at.is_(None), outbox.c.job.in_(list(GIVE_UP)),
                                   outbox.c.attempts >= gw.config.job_attempts,
                                   outbox.c.claimed_at <= now - gw.config.job_timeout)
                            .limit(limit)).all()
    for row in rows:
        _give_up(gw, row.id, row.job, row.args)
    return len(rows)


def relay_quietly(gw: Gateway) -> None:
    """Relay after a commit: the commit stands whatever happens here; what could not be handed
    on now waits for the next relay."""
    try:
        relay(gw)
    except Exception as exc:  # noqa: BLE001 - never undo or fail the request that committed
        log.warning("outbox relay deferred: %s", type(exc).__name__)


def run(outbox_id: int) -> object:
    """An RQ worker's entry: run one outbox row against the worker's gateway."""
    return _run(runtime.current(), outbox_id, raise_errors=True)


def _run(gw: Gateway, outbox_id: int, *, claim=None, raise_errors: bool = False):
    """Run the row's job unless it is already done (or, with ``claim``, unless another relay
    took it first); mark it done once it succeeded. Answers the job's result (None when there
    was nothing to do)."""
    now = gw.clock.now()
    # a lease: a run that started less than job_timeout ago may still be going (a second copy
    # of the RQ job, a second relay), so nobody else starts it meanwhile
    free = and_(outbox.c.done_at.is_(None), outbox.c.attempts < gw.config.job_attempts,
                or_(outbox.c.claimed_at.is_(None),
                    outbox.c.claimed_at <= now - gw.config.job_timeout))
    with gw.transaction() as conn:
        row = conn.execute(update(outbox)
                           .where(outbox.c.id == outbox_id, free,
                                  claim if claim is not None else true())
                           .values(attempts=outbox.c.attempts + 1, relayed_at=now,
                                   claimed_at=now)
                           .returning(outbox.c.job, outbox.c.args, outbox.c.attempts,
                                      outbox.c.request_id)).first()
    if row is None:
        return None
    from gateway.logs import JOB_REQUEST
    token = _running(outbox_id)
    asked_by = JOB_REQUEST.set(row.request_id)
    try:
        result = JOBS[row.job](gw, **row.args)
    except Exception as exc:
        _finished(token)
        JOB_REQUEST.reset(asked_by)
        log.warning("job %s (outbox %s) failed: %s", row.job, outbox_id, type(exc).__name__)
        if row.attempts >= gw.config.job_attempts and row.job in GIVE_UP:
            _give_up(gw, outbox_id, row.job, row.args)
        if raise_errors:
            raise
        return None
    JOB_REQUEST.reset(asked_by)
    if _finished(token):     # marked done by the job, in its own last transaction
        return result if result is not None else True
    with gw.transaction() as conn:
        conn.execute(update(outbox).where(outbox.c.id == outbox_id)
                     .values(done_at=gw.clock.now()))
    return result if result is not None else True
