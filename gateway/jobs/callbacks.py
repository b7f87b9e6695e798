"""CDI callbacks: when a query named a ``callback_url``, its outcome is POSTed there, signed by
the gateway (a compact JWS, ``typ: cdeg-cdi-callback+jwt``, ``Content-Type: application/jose``;
its ``result`` is the same sealed JWE the FI can poll for), until the receiver answers 2xx.

    due(gw, pusher)  claims the deliveries that are due, as many as the pusher has room for
                     (a lease: no two workers send one)
    deliver(gw, r)   one try: delivered, or tried again after callback_backoff * 2^(n-1) s,
                     and after callback_attempts tries ``failed`` (the FI reads it on its query)
    pump(gw, pusher) what ``cdeg worker`` (and the embedded ``cdeg serve``) runs every
                     callback_every seconds: the due deliveries, each on a pusher thread

A receiver that is down, slow or answers 500 holds at most its host's share of the pusher's
threads (``push.Pusher``) and never a query job: the jobs run on RQ, the callbacks beside them.
Outside demo mode a callback never goes to a loopback, link-local or private address, even by
a registered DNS name that resolves to one (checked at each try). The body carries a ``jti``
and the ``query_id``: a receiver that saw a try it did not answer in time may see it again.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from gateway.store.db import cdi_queries
from gateway.tokens import jose
from gateway.tokens.access import new_jti

from . import push

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")

CALLBACK_TYP = "cdeg-cdi-callback+jwt"


def _url(row) -> str:
    return row.callback_url


def due(gw: Gateway, pusher: push.Pusher | None = None) -> list:
    return push.claim(gw, select(cdi_queries).where(cdi_queries.c.delivery == "pending",
                                                    cdi_queries.c.next_delivery_at <= gw.clock.now())
                      .order_by(cdi_queries.c.next_delivery_at),
                      cdi_queries, cdi_queries.c.id, cdi_queries.c.next_delivery_at, _url, pusher)


def body_for(gw: Gateway, row) -> str:
    claims = {"iss": gw.config.issuer, "aud": row.client_id, "iat": gw.clock.now(),
              "jti": new_jti(), "query_id": row.query_id, "status": row.status}
    if row.result is not None:
        claims["result"] = row.result
    if row.error:
        claims["error"] = row.error
    return jose.sign(claims, gw.keyring.signing_key, typ=CALLBACK_TYP)


def deliver(gw: Gateway, row) -> str:
    error = push.post(gw, row.callback_url, body_for(gw, row), "application/jose")
    now = gw.clock.now()
    attempts = row.delivery_attempts + 1
    if error is None:
        values = dict(delivery="delivered", next_delivery_at=None, delivery_error=None,
                      collected_at=row.collected_at or now)
    elif attempts >= gw.config.callback_attempts:
        values = dict(delivery="failed", next_delivery_at=None, delivery_error=error[:200])
    else:
        values = dict(next_delivery_at=now + push.wait_before(gw, attempts),
                      delivery_error=error[:200])
    with gw.transaction() as conn:
        conn.execute(update(cdi_queries).where(cdi_queries.c.id == row.id,
                                               cdi_queries.c.delivery == "pending",
                                               cdi_queries.c.next_delivery_at == row.claimed_until)
                     .values(delivery_attempts=attempts, **values))
    return values.get("delivery", "pending")


def pump(gw: Gateway, pusher: push.Pusher | None = None) -> int:
    """Send the callbacks that are due: on ``pusher``'s threads, or here in turn without one."""
    return push.run(gw, due(gw, pusher), pusher, _url, _deliver_quietly,
                    key_of=lambda row: row.id)


def _deliver_quietly(gw: Gateway, row) -> None:
    try:
        deliver(gw, row)
    except Exception as exc:  # noqa: BLE001 - the lease ends and the next pump tries again
        log.warning("callback for query %s deferred: %s", row.id, type(exc).__name__)
