"""``cdeg worker``: an RQ worker on the real Redis, with the outbox relay beside it.

The worker builds its gateway once and installs it (``gateway.runtime``), so every job runs
against it. Before taking jobs, and then every ``job_relay_every`` seconds (both in ``Config``)
in a thread, it relays the outbox (rows a crash or a Redis outage left behind, rows relayed
long ago and never done). The expiry sweep is on a schedule kept by RQ's own
``CronScheduler`` (``rq.cron``: every ``sweep_every`` seconds it enqueues ``sweep_due``, which
asks for the sweep — one outbox row per window whatever the number of workers, as the window
names its idempotency key). The embedded ``cdeg serve`` has no RQ: its timer thread asks for
the sweep each round instead.

RQ's ``SimpleWorker`` (no fork per job): on these machines it runs about 3.5x the jobs of the
forking worker (PERFORMANCE.md); each job's time is bounded by its ``job_timeout``.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from rq import SimpleWorker
from rq.cron import CronScheduler

from gateway import runtime
from gateway.store.queue import queue_for

from gateway.audit import sequencer

from . import callbacks, events, outbox
from .push import Pusher

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")


def ask_for_sweep(gw: Gateway) -> None:
    now = gw.clock.now()
    with gw.transaction() as conn:
        outbox.add(conn, now, "sweep.expire_consents", {},
                   key=f"sweep.expire_consents:{now // gw.config.sweep_every}")


def sweep_due() -> None:
    """What the schedule enqueues: ask (once per window) for the expiry sweep."""
    ask_for_sweep(runtime.current())


def schedule(gw: Gateway) -> CronScheduler:
    """RQ's scheduler for this worker's recurring jobs (its loop is ``tend``'s: RQ's own
    ``start()`` takes over the process's signals, which belong to the worker)."""
    cron = CronScheduler(connection=gw.redis.client, name=f"cdeg-{id(gw):x}")
    cron.register(sweep_due, queue_name=queue_for(gw).name, interval=gw.config.sweep_every,
                  job_timeout=gw.config.job_timeout, failure_ttl=3600, result_ttl=600)
    return cron


def tend(gw: Gateway, cron: CronScheduler | None = None) -> None:
    """One round of the worker's housekeeping; failures wait for the next round."""
    try:
        if cron is not None:
            cron.enqueue_jobs()          # whatever RQ's schedule says is due
        else:
            ask_for_sweep(gw)            # the embedded gateway's timer
        outbox.relay(gw)
        outbox.give_up_stale(gw)
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        log.warning("outbox relay deferred: %s", type(exc).__name__)
    try:
        from gateway.cdi.queries import purge_results
        purge_results(gw)
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        log.warning("purging CDI results deferred: %s", type(exc).__name__)
    sequence(gw)


def sequence(gw: Gateway) -> None:
    """Integrate what has committed into the log's trees, and checkpoint when due."""
    try:
        sequencer.integrate_all(gw)
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        log.warning("sequencing deferred: %s", type(exc).__name__)


def tend_in_background(gw: Gateway, cron: CronScheduler | None = None) -> threading.Event:
    """Tend every ``job_relay_every`` seconds in a daemon thread until the answer is set: in
    ``cdeg worker`` beside RQ, and in the embedded ``cdeg serve`` (no worker there: its jobs run
    inline, and this is what retries a failed one and sweeps)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(gw.config.job_relay_every):
            tend(gw, cron)

    def sequencing():
        while not stop.wait(gw.config.log_every):
            sequence(gw)

    def calling_back():
        # a receiver that is slow holds its host's share of its kind's threads, never a
        # query job, never another host's share, never the other kind's
        pushers = [(callbacks, Pusher("cdeg-callback")), (events, Pusher("cdeg-event"))]
        while not stop.wait(gw.config.callback_every):
            for kind, pusher in pushers:
                try:
                    kind.pump(gw, pusher)
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("pushes deferred: %s", type(exc).__name__)
        for _, pusher in pushers:
            pusher.shutdown()

    threading.Thread(target=loop, name="cdeg-outbox-relay", daemon=True).start()
    threading.Thread(target=sequencing, name="cdeg-sequencer", daemon=True).start()
    threading.Thread(target=calling_back, name="cdeg-callbacks", daemon=True).start()
    return stop


def work(gw: Gateway, *, burst: bool = False) -> None:
    runtime.install(gw)
    cron = schedule(gw)
    tend(gw, cron)
    stop = threading.Event() if burst else tend_in_background(gw, cron)
    try:
        SimpleWorker([queue_for(gw)], connection=gw.redis.client).work(burst=burst)
    finally:
        stop.set()
