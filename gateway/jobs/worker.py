"""``cdeg worker``: an RQ worker on the real Redis, with the outbox relay beside it.

The worker builds its gateway once and installs it (``gateway.runtime``), so every job runs
against it. Before taking jobs, and then every ``job_relay_every`` seconds (both in ``Config``) in a thread, it relays
the outbox (rows a crash or a Redis outage left behind, rows relayed long ago and never done)
and asks for the expiry sweep once per ``sweep_every`` window — one row per window whatever the
number of workers, as the window names its idempotency key.

RQ's ``SimpleWorker`` (no fork per job): on these machines it runs about 3.5x the jobs of the
forking worker (PERFORMANCE.md); each job's time is bounded by its ``job_timeout``.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from rq import SimpleWorker

from gateway import runtime
from gateway.store.queue import queue_for

from gateway.audit import sequencer

from . import callbacks, events, outbox

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")


def ask_for_sweep(gw: Gateway) -> None:
    now = gw.clock.now()
    with gw.transaction() as conn:
        outbox.add(conn, now, "sweep.expire_consents", {},
                   key=f"sweep.expire_consents:{now // gw.config.sweep_every}")


def tend(gw: Gateway) -> None:
    """One round of the worker's housekeeping; failures wait for the next round."""
    try:
        ask_for_sweep(gw)
        outbox.relay(gw)
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


def tend_in_background(gw: Gateway) -> threading.Event:
    """Tend every ``job_relay_every`` seconds in a daemon thread until the answer is set: in
    ``cdeg worker`` beside RQ, and in the embedded ``cdeg serve`` (no worker there: its jobs run
    inline, and this is what retries a failed one and sweeps)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(gw.config.job_relay_every):
            tend(gw)

    def sequencing():
        while not stop.wait(gw.config.log_every):
            sequence(gw)

    def calling_back():
        # a receiver that is slow holds one of these threads, never a query job
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cdeg-callback")
        while not stop.wait(gw.config.callback_every):
            for kind in (callbacks, events):
                try:
                    kind.pump(gw, pool)
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("pushes deferred: %s", type(exc).__name__)
        pool.shutdown(wait=False)

    threading.Thread(target=loop, name="cdeg-outbox-relay", daemon=True).start()
    threading.Thread(target=sequencing, name="cdeg-sequencer", daemon=True).start()
    threading.Thread(target=calling_back, name="cdeg-callbacks", daemon=True).start()
    return stop


def work(gw: Gateway, *, burst: bool = False) -> None:
    runtime.install(gw)
    tend(gw)
    stop = threading.Event() if burst else tend_in_background(gw)
    try:
        SimpleWorker([queue_for(gw)], connection=gw.redis.client).work(burst=burst)
    finally:
        stop.set()
