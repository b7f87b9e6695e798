"""Revocation pushed to the requester: a Security Event Token (RFC 8417, ``typ:
secevent+jwt``, signed by the gateway) with the event
``https://cdeg.example/events/consent-revoked``, POSTed per RFC 8935 to the requester's
registered event endpoint (``Content-Type: application/secevent+jwt``, ``Accept:
application/json``; the receiver answers 202).

The revocation writes ``event_delivery = pending`` in its own transaction (so the push can
neither be lost nor precede it); then:

    due(gw, pusher)  claims the pushes that are due, as many as the pusher has room for
                     (a lease: no two workers send one)
    deliver(gw, r)   one try: ``notified``; or tried again after callback_backoff * 2^(n-1) s
                     (a receiver down, slow, redirecting or answering 5xx, 408 or 429), and
                     after callback_attempts tries ``failed``; a 4xx refusal ends it ``failed``
                     at once (RFC 8935 2.3: the receiver will not take this SET)
    pump(gw, pusher) what ``cdeg worker`` (and the embedded ``cdeg serve``) runs every
                     callback_every seconds, beside the CDI callbacks

The revocation itself never waits for any of this: it is immediate (SPEC 4 and 6). The
citizen sees the delivery state beside the revoked consent.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from gateway.consent.ledger import subject_of
from gateway.store.db import consents, requesters
from gateway.tokens import jose
from gateway.tokens.access import new_jti

from . import push

if TYPE_CHECKING:
    from gateway.instance import Gateway

log = logging.getLogger("cdeg.jobs")

SET_TYP = "secevent+jwt"
REVOKED = "https://cdeg.example/events/consent-revoked"
RETRIED_REFUSALS = (408, 429)


def _url(row) -> str | None:
    return row.webhook_url


def due(gw: Gateway, pusher: push.Pusher | None = None) -> list:
    return push.claim(gw, select(consents, requesters.c.webhook_url)
                      .join(requesters, requesters.c.client_id == consents.c.client_id)
                      .where(consents.c.event_delivery == "pending",
                             consents.c.next_event_at <= gw.clock.now())
                      .order_by(consents.c.next_event_at),
                      consents, consents.c.consent_id, consents.c.next_event_at, _url, pusher)


def security_event(gw: Gateway, consent) -> str:
    claims = {"iss": gw.config.issuer, "aud": consent.client_id, "iat": gw.clock.now(),
              "jti": new_jti(), "sub_id": {"format": "opaque",
                                           "id": subject_of(gw, vars(consent))},
              "events": {REVOKED: {"consent_id": consent.consent_id,
                                   "revoked_at": consent.ended_at}}}
    return jose.sign(claims, gw.keyring.signing_key, typ=SET_TYP)


def deliver(gw: Gateway, consent) -> str:
    url = consent.webhook_url
    refusal: list[int] = []

    def accepted(status: int) -> bool:
        if 400 <= status < 500 and status not in RETRIED_REFUSALS:
            refusal.append(status)
        return 200 <= status < 300

    error = "the requester has no event endpoint any more" if not url else push.post(
        gw, url, security_event(gw, consent), "application/secevent+jwt",
        accept="application/json", ok=accepted)
    attempts = consent.event_attempts + 1
    if error is None:
        values = dict(event_delivery="notified", next_event_at=None, event_error=None)
    elif refusal or not url or attempts >= gw.config.callback_attempts:
        values = dict(event_delivery="failed", next_event_at=None, event_error=error[:200])
    else:
        values = dict(next_event_at=gw.clock.now() + push.wait_before(gw, attempts),
                      event_error=error[:200])
    with gw.transaction() as conn:
        conn.execute(update(consents).where(consents.c.consent_id == consent.consent_id,
                                            consents.c.event_delivery == "pending",
                                            consents.c.next_event_at == consent.claimed_until)
                     .values(event_attempts=attempts, **values))
    return values.get("event_delivery", "pending")


def pump(gw: Gateway, pusher: push.Pusher | None = None) -> int:
    return push.run(gw, due(gw, pusher), pusher, _url, _deliver_quietly,
                    key_of=lambda row: row.consent_id)


def _deliver_quietly(gw: Gateway, consent) -> None:
    try:
        deliver(gw, consent)
    except Exception as exc:  # noqa: BLE001 - the lease ends and the next pump tries again
        log.warning("revocation event for a consent deferred: %s", type(exc).__name__)
