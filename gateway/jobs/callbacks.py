"""CDI callbacks: when a query named a ``callback_url``, its outcome is POSTed there, signed by
the gateway (a compact JWS, ``typ: cdeg-cdi-callback+jwt``, ``Content-Type: application/jose``;
its ``result`` is the same sealed JWE the FI can poll for), until the receiver answers 2xx.

    due(gw)          claims the deliveries that are due (a lease: no two workers send one)
    deliver(gw, r)   one try: delivered, or tried again after callback_backoff * 2^(n-1) s,
                     and after callback_attempts tries ``failed`` (the FI reads it on its query)
    pump(gw, pool)   what ``cdeg worker`` (and the embedded ``cdeg serve``) runs every
                     callback_every seconds: the due deliveries, each on a thread of ``pool``

A receiver that is down, slow or answers 500 holds one of the pool's threads for at most its
(connect, read) timeout and never a query job: the jobs run on RQ, the callbacks beside them.
Outside demo mode a callback never goes to a loopback, link-local or private address, even by
a registered DNS name that resolves to one (checked at each try). The body carries a ``jti``
and the ``query_id``: a receiver that saw a try it did not answer in time may see it again.
"""
from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from sqlalchemy import select, update

from gateway.requester_registry import _is_internal
from gateway.store.db import cdi_queries
from gateway.tokens import jose
from gateway.tokens.access import new_jti

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")

CALLBACK_TYP = "cdeg-cdi-callback+jwt"
LEASE_MARGIN = 5     # seconds beyond one try's (connect, read) timeout a claim is left to its worker
BATCH = 20


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False       # no proxy variables: the registered URL, and only it
    session.headers["User-Agent"] = "cdeg-gateway/0.1 (CDI callback)"
    return session


_SESSION = _session()


def due(gw: Gateway, limit: int = BATCH) -> list:
    now = gw.clock.now()
    with gw.transaction() as conn:
        query = (select(cdi_queries).where(cdi_queries.c.delivery == "pending",
                                           cdi_queries.c.next_delivery_at <= now)
                 .order_by(cdi_queries.c.next_delivery_at).limit(limit))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if rows:
            conn.execute(update(cdi_queries).where(cdi_queries.c.id.in_([r.id for r in rows]))
                         .values(next_delivery_at=now + lease(gw)))
    return rows


def lease(gw: Gateway) -> int:
    """How long a claimed delivery is its worker's: one try's whole timeout and a margin (a
    worker killed mid-try delays that callback by this much, no more)."""
    return int(sum(gw.config.callback_timeout)) + LEASE_MARGIN


def body_for(gw: Gateway, row) -> str:
    claims = {"iss": gw.config.issuer, "aud": row.client_id, "iat": gw.clock.now(),
              "jti": new_jti(), "query_id": row.query_id, "status": row.status}
    if row.result is not None:
        claims["result"] = row.result
    if row.error:
        claims["error"] = row.error
    return jose.sign(claims, gw.keyring.signing_key, typ=CALLBACK_TYP)


def _refused_destination(gw: Gateway, url: str) -> str | None:
    if gw.config.demo:
        return None
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return None                  # the POST itself will say it cannot connect
    if any(_is_internal(a.split("%")[0]) for a in addresses):
        return "the callback URL resolves to a private or loopback address"
    return None


def _try(gw: Gateway, row) -> str | None:
    """POST once; None when the receiver took it, else why not (no personal data)."""
    refused = _refused_destination(gw, row.callback_url)
    if refused:
        return refused
    try:
        resp = _SESSION.post(row.callback_url, data=body_for(gw, row).encode("ascii"),
                             headers={"Content-Type": "application/jose"},
                             timeout=gw.config.callback_timeout, allow_redirects=False,
                             stream=True)
    except requests.Timeout:
        return "no answer in time"
    except requests.RequestException as exc:
        return f"could not connect ({type(exc).__name__})"
    try:
        if 200 <= resp.status_code < 300:
            return None
        return f"answered {resp.status_code}"
    finally:
        resp.close()                 # the receiver's body is not read


def deliver(gw: Gateway, row) -> str:
    error = _try(gw, row)
    now = gw.clock.now()
    attempts = row.delivery_attempts + 1
    if error is None:
        values = dict(delivery="delivered", next_delivery_at=None, delivery_error=None,
                      collected_at=row.collected_at or now)
    elif attempts >= gw.config.callback_attempts:
        values = dict(delivery="failed", next_delivery_at=None, delivery_error=error[:200])
    else:
        wait = gw.config.callback_backoff * 2 ** (attempts - 1)
        values = dict(next_delivery_at=now + max(1, round(wait)), delivery_error=error[:200])
    with gw.transaction() as conn:
        conn.execute(update(cdi_queries).where(cdi_queries.c.id == row.id,
                                               cdi_queries.c.delivery == "pending")
                     .values(delivery_attempts=attempts, **values))
    return values.get("delivery", "pending")


def pump(gw: Gateway, pool: ThreadPoolExecutor | None = None) -> int:
    """Send the callbacks that are due: on ``pool``'s threads, or here in turn without one."""
    rows = due(gw)
    for row in rows:
        if pool is None:
            _deliver_quietly(gw, row)
        else:
            pool.submit(_deliver_quietly, gw, row)
    return len(rows)


def _deliver_quietly(gw: Gateway, row) -> None:
    try:
        deliver(gw, row)
    except Exception as exc:  # noqa: BLE001 - the lease ends and the next pump tries again
        log.warning("callback for query %s deferred: %s", row.id, type(exc).__name__)
