"""The CDI query job: release the consented data for one stored query, through the same steps
as ``GET /api/v1/data`` (``gateway/exchange/release.py``, route ``cdi``), sealed for the FI.

    grant  = live_grant(claims verified when the query was accepted)
    items  = decide(grant, the query's items, now)
    values = router.fetch(...)                      outside any transaction
    sealed = a JWS by the gateway, encrypted to the FI's enc key
    one transaction: record_in(key = the query_id)  the release and its audit entry
                     the query done, its result      together, or neither
                     its callback due (if any)

So a worker killed anywhere before that commit leaves the query to be run again (the outbox
hands it on when its lease ends) and nothing released; killed after it, the run is done and a
second run finds it so. A source that fails, a consent revoked or narrowed meanwhile, ends the
query ``failed`` with a reason the FI can act on, never with part of the data.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from gateway import metrics, requester_registry
from gateway.cdi.status import DONE, FAILED, QUEUED, RUNNING
from gateway.errors import InvalidToken, OutsideConsent, SourceFailed, SourceTimeout, \
    SourceUnavailable
from gateway.exchange.release import decide, live_grant, record_in
from gateway.store.db import cdi_queries, requesters
from gateway.tokens import jwe
from gateway.tokens.access import VerifiedClaims, new_jti

if TYPE_CHECKING:
    from gateway.instance import Gateway

RESULT_TYP = "cdeg-cdi-result+jwt"
_OPEN = (QUEUED, RUNNING)


class Superseded(Exception):
    """Another run of this query ended it first: this run's transaction rolls back."""


def _finish(gw: Gateway, row, conn=None, **values) -> None:
    """End the query (guarded: only one run ends it; a later one raises ``Superseded`` and its
    transaction, release included, rolls back) and mark its outbox row done with it."""
    from gateway.jobs.outbox import done_in   # (the outbox module imports the job registry)
    values.update(finished_at=gw.clock.now())
    if row.callback_url is not None:
        values.update(delivery="pending", next_delivery_at=gw.clock.now())
    stmt = update(cdi_queries).where(cdi_queries.c.id == row.id,
                                     cdi_queries.c.status.in_(_OPEN)).values(**values) \
        .returning(cdi_queries.c.id)

    def end(c) -> None:
        if c.execute(stmt).first() is None:
            raise Superseded()
        done_in(c, values["finished_at"])

    if conn is not None:
        end(conn)
        return
    try:
        with gw.transaction() as own:
            end(own)
    except Superseded:
        pass


def give_up(gw: Gateway, query: int) -> None:
    """The job failed on every try it is given (or its last worker died): the query ends
    ``failed``, its FI told, rather than ``running`` for ever."""
    with gw.reads.connect() as conn:
        row = conn.execute(select(cdi_queries).where(cdi_queries.c.id == query)).first()
    if row is not None and row.status in _OPEN:
        _fail(gw, row, "internal-error", "the gateway could not complete this query; nothing "
                                         "was released; submit a new query")


def _fail(gw: Gateway, row, code: str, detail: str) -> str:
    _finish(gw, row, status=FAILED, error={"code": code, "detail": detail})
    return FAILED


def run_query(gw: Gateway, query: int) -> str:
    with gw.transaction() as conn:     # claimed and read in one statement
        row = conn.execute(update(cdi_queries).where(cdi_queries.c.id == query,
                                                     cdi_queries.c.status.in_(_OPEN))
                           .values(status=RUNNING).returning(*cdi_queries.c)).first()
    if row is None:
        return "done before"           # done (or failed) before, or never made: nothing twice
    # the access token was verified (signature, issuer, audience, exp) when the query was
    # accepted; its row, the consent and the policy are checked again now, as for any read
    claims = VerifiedClaims({"jti": row.token_id, "consent_id": row.consent_id,
                             "client_id": row.client_id, "exp": row.token_exp})
    try:
        grant = live_grant(gw, claims)
        values = gw.router.fetch(grant.hkid, decide(grant, row.items, gw.clock.now()))
    except InvalidToken as exc:
        return _fail(gw, row, "consent-ended", f"{exc.detail}: ask the customer for consent again")
    except OutsideConsent as exc:
        return _fail(gw, row, "outside-consent", exc.detail)
    except SourceTimeout as exc:
        return _fail(gw, row, "source-timeout", f"{exc.detail}; submit a new query later")
    except (SourceFailed, SourceUnavailable) as exc:
        return _fail(gw, row, "source-failed", f"{exc.detail}; submit a new query later")
    with gw.reads.connect() as conn:
        requester = requester_registry.get(conn, row.client_id)
    encryption_key = gw.client_keys.encryption_key(requester)
    if encryption_key is None:
        return _fail(gw, row, "no-encryption-key", "the FI has no registered encryption key")
    now = gw.clock.now()
    sealed = jwe.seal({"iss": gw.config.issuer, "aud": row.client_id, "iat": now,
                       "jti": new_jti(), "query_id": row.query_id, "consent_id": grant.consent_id,
                       "subject": grant.subject, "items": values},
                      gw.keyring.signing_key, encryption_key, typ=RESULT_TYP)

    def write(conn) -> None:
        # the query ended first (no other run may end it after), then the release: both or
        # neither; the policy as it stands now, not as read before the fetch
        _finish(gw, row, conn, status=DONE, result=sealed)
        current = conn.execute(select(requesters.c.policy)
                               .where(requesters.c.client_id == row.client_id)).scalar()
        if current != grant.policy:
            raise OutsideConsent("the requester's policy changed while the sources answered")
        record_in(conn, gw, grant, list(values), route="cdi", key=f"cdi:{row.query_id}", now=now)

    try:
        gw.in_transaction(write)
    except InvalidToken as exc:     # revoked while the sources answered: nothing released
        return _fail(gw, row, "consent-ended", f"{exc.detail}: ask the customer for consent again")
    except OutsideConsent as exc:
        return _fail(gw, row, "policy-changed", f"{exc.detail}; submit a new query")
    except Superseded:
        return "ended by another run"
    metrics.released(list(values), "cdi")
    return DONE
