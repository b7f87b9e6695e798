"""``GET /metrics``: Prometheus text (prometheus-client) for operators.

Counted as it happens: requests by route, method and status, and their latency; tokens minted;
releases by item and route; connector calls by source and outcome. Read at each scrape from the
ledger and the queue: consents by state, CDI queries by state, jobs waiting and jobs failed for
good. Under several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
shared by them (and ``gateway/gunicorn_conf.py`` as gunicorn's config, which marks a dead
worker's files): the counters are then summed across the workers at each scrape.

Not public: with ``CDEG_METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer
<token>``; without it the page exists in demo mode only (404 under ``CDEG_ENV=production``).
"""
from __future__ import annotations

import hmac
import os
import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

REQUESTS = Counter("cdeg_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
LATENCY = Histogram("cdeg_http_request_seconds", "Time to answer an HTTP request", ["route"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TOKENS = Counter("cdeg_tokens_minted_total", "Tokens minted", ["kind"])
RELEASES = Counter("cdeg_releases_total", "Data items released", ["item", "route"])
CONNECTOR_CALLS = Counter("cdeg_connector_calls_total", "Calls to the department services",
                          ["source", "outcome"])


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Each labelled series, found once: ``labels()`` checks and locks on every call, and a data
# call counts ten of them. Every label here is bounded (route rules, methods, statuses, the
# catalogue's items, the sources), so this holds a few hundred at most; the series are
# prometheus-client's own (``labels()`` answers the same object every time).
_SERIES: dict[tuple, object] = {}


def _series(metric, *values: str):
    key = (metric, values)
    found = _SERIES.get(key)
    if found is None:
        found = _SERIES[key] = metric.labels(*values)
    return found


def released(items, route: str) -> None:
    for item in items:
        _series(RELEASES, item, route).inc()


def connector_call(source: str, outcome: str) -> None:
    _series(CONNECTOR_CALLS, source, outcome).inc()


def tokens_minted(body: dict) -> None:
    _series(TOKENS, "access").inc()
    if body.get("refresh_token"):
        _series(TOKENS, "refresh").inc()


class LedgerState:
    """What a scrape reads from the ledger and the queue (not counted in this process)."""

    def __init__(self, gw):
        self.gw = gw

    def collect(self):
        from gateway.store.db import cdi_queries, consents, outbox
        gw = self.gw
        consent_states = GaugeMetricFamily("cdeg_consents", "Consents by state",
                                           labels=["status"])
        queries = GaugeMetricFamily("cdeg_cdi_queries", "CDI queries by state",
                                    labels=["status"])
        waiting = GaugeMetricFamily("cdeg_jobs_waiting", "Jobs asked for and not yet done")
        failed = GaugeMetricFamily("cdeg_jobs_failed", "Jobs that failed every try")
        with gw.reads.connect() as conn:
            for status, count in conn.execute(select(consents.c.status, func.count())
                                              .group_by(consents.c.status)):
                consent_states.add_metric([status], count)
            for status, count in conn.execute(select(cdi_queries.c.status, func.count())
                                              .group_by(cdi_queries.c.status)):
                queries.add_metric([status], count)
            open_jobs = outbox.c.done_at.is_(None)
            waiting.add_metric([], conn.execute(
                select(func.count()).select_from(outbox)
                .where(open_jobs, outbox.c.attempts < gw.config.job_attempts)).scalar())
            failed.add_metric([], conn.execute(
                select(func.count()).select_from(outbox)
                .where(open_jobs, outbox.c.attempts >= gw.config.job_attempts)).scalar())
        yield from (consent_states, queries, waiting, failed)
        if not gw.config.inline_jobs:
            depth = GaugeMetricFamily("cdeg_queue_depth", "Jobs on the RQ queue")
            try:
                from gateway.store.queue import queue_for
                depth.add_metric([], queue_for(gw).count)
            except Exception:  # noqa: BLE001 - Redis down: the gauge is absent, not a 500
                return
            yield depth


def exposition(gw) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (REQUESTS, LATENCY, TOKENS, RELEASES, CONNECTOR_CALLS):
            registry.register(collector)
    registry.register(LedgerState(gw))
    return generate_latest(registry)


def allowed(gw, authorization: str) -> bool | None:
    """True: serve; False: 401 (a token is set and was not given); None: 404 (not enabled)."""
    token = gw.config.metrics_token
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  token.encode())
    return True if gw.config.demo else None


def init_app(app) -> None:
    """Count every request: its route (the rule, never the URL: no ids), method, status, time."""
    from flask import g, request

    @app.after_request
    def _counted(resp):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"   # a bounded label
        _series(REQUESTS, route, method, str(resp.status_code)).inc()
        started = g.get("started")       # set by create_app's first hook
        if started is not None:
            _series(LATENCY, route).observe(time.perf_counter() - started)
        return resp


CONTENT_TYPE = CONTENT_TYPE_LATEST
