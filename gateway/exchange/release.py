"""A data release: the live consent re-checked, items minimised to consented ∩ allowed, fetched
from their sources, and the release audited (and a ``once`` consent ended) in one transaction.

The sources are called outside any database transaction (no lock is held across HTTP); the
write transaction then re-checks the consent with a guarded UPDATE, which also serialises it
against a concurrent revocation: a consent revoked meanwhile releases nothing.
"""
from __future__ import annotations

from sqlalchemy import bindparam, select, update

from gateway.audit import chain
from gateway.consent import ledger, liveness
from gateway.consent.lifecycle import Status
from gateway.store.db import citizens, consents, requesters, tokens
from policies.engine import PolicyError, allowed_items, check_consent

from .router import ExchangeError


class ReleaseError(Exception):
    """The release was refused; ``reason`` says which edge error it maps to."""

    def __init__(self, reason: str, detail: str, *, errors: dict | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.errors = reason, detail, errors or {}


MAX_ITEMS_PARAM = 30


def parse_items(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    items = [i.strip() for i in raw.split(",")]
    if not raw.strip() or any(not i for i in items):
        raise ReleaseError("bad_request", "items must be a comma-separated list of data item ids",
                           errors={"items": ["empty entry"]})
    if len(items) > MAX_ITEMS_PARAM or len(raw) > 2000:
        raise ReleaseError("bad_request", "too many items", errors={"items": ["too many"]})
    return list(dict.fromkeys(items))


_LIVE = (select(consents.c.consent_id, consents.c.client_id, consents.c.subject_id,
                consents.c.status, consents.c.purpose, consents.c.data_items, consents.c.access,
                consents.c.expires_at, consents.c.decided_at, tokens.c.revoked_at.label("token_revoked_at"),
                tokens.c.client_id.label("token_client_id"), requesters.c.policy,
                citizens.c.hkid)
         .select_from(tokens.join(consents, tokens.c.consent_id == consents.c.consent_id)
                      .join(requesters, requesters.c.client_id == consents.c.client_id)
                      .join(citizens, citizens.c.subject_id == consents.c.subject_id)))


_LIVE_BY_JTI = _LIVE.where(tokens.c.token_id == bindparam("jti"), tokens.c.kind == "access")
# Re-check inside the write transaction; the UPDATE also locks the consent row against a
# concurrent revocation until this release is committed.
_STILL_LIVE = (update(consents)
               .where(consents.c.consent_id == bindparam("cid"),
                      liveness.live_clause(consents, bindparam("now")),
                      # the token row locked first (the ledger's lock order): a concurrent
                      # revocation waits for this release, or this release sees it
                      select(tokens.c.token_id)
                      .where(tokens.c.token_id == bindparam("jti"),
                             tokens.c.revoked_at.is_(None))
                      .with_for_update(key_share=True).exists())
               .values(status=consents.c.status))  # a touch: takes the row lock


def live_grant(gw, conn, claims: dict) -> dict:
    """Token row + consent + requester policy + citizen in one statement; refuse if not live."""
    row = conn.execute(_LIVE_BY_JTI, {"jti": claims["jti"]}).mappings().first()
    now = gw.clock.now()
    if row is None or row["token_revoked_at"] is not None:
        raise ReleaseError("invalid_token", "the access token was revoked")
    if row["consent_id"] != claims["consent_id"] or row["client_id"] != claims["client_id"] \
            or row["token_client_id"] != claims["client_id"]:
        raise ReleaseError("invalid_token", "the access token does not match its consent")
    if not liveness.is_live(row, now):
        raise ReleaseError("invalid_token", "the consent was revoked or has expired")
    if row["purpose"] in (row["policy"] or {}).get("purposes", {}):  # a withdrawn purpose: below
        try:  # the policy narrowed the consent's kind or length since it was approved
            check_consent(row["policy"], row, now)
        except PolicyError as exc:
            raise ReleaseError("invalid_token", str(exc)) from exc
    return dict(row)


def release(gw, claims: dict, requested: list[str] | None, route: str = "api") -> dict:
    with gw.reads.connect() as conn:
        grant = live_grant(gw, conn, claims)
    permitted = [i for i in grant["data_items"] if i in allowed_items(grant["policy"], grant["purpose"])]
    if requested is None:
        items = permitted
    else:
        outside = [i for i in requested if i not in permitted]
        if outside:
            raise ReleaseError("outside_consent", "items outside the consent were asked for",
                               errors={"items": [f"{i}: not within the consent" for i in outside]})
        items = requested
    if not items:
        raise ReleaseError("outside_consent", "the requester's policy no longer allows any "
                           "of the consented items", errors={"items": ["nothing allowed"]})
    try:
        values = gw.router.fetch(grant["hkid"], items)
    except ExchangeError as exc:
        raise ReleaseError("source_unavailable", str(exc)) from exc
    now = gw.clock.now()
    audit = dict(client_id=grant["client_id"], subject=claims["sub"],
                 consent_id=grant["consent_id"], items=list(values), route=route)
    if grant["access"] == "ongoing" and gw.db.dialect.name == "postgresql":
        # autocommit: the one statement is its own transaction
        recorded = gw.in_transaction(
            lambda conn: chain.release_sql(conn, now, claims["jti"], **audit), engine=gw.reads)
        if recorded is None:
            raise ReleaseError("invalid_token", "the consent was revoked or has expired")
        return {"consent_id": grant["consent_id"], "subject": claims["sub"], "items": values}

    def record(conn):
        still = conn.execute(_STILL_LIVE, {"cid": grant["consent_id"], "now": now,
                                           "jti": claims["jti"]}).rowcount
        if still != 1:
            raise ReleaseError("invalid_token", "the consent was revoked or has expired")
        chain.append(conn, now, "data.released", **audit)
        if grant["access"] == "once":
            ledger.transition(conn, now, {**grant, "status": Status.APPROVED.value}, "expired",
                              subject=claims["sub"], route=route)

    gw.in_transaction(record)
    return {"consent_id": grant["consent_id"], "subject": claims["sub"], "items": values}
