"""An FI's queries through the CDI bridge: submitted (verified, checked like a data API call,
stored with its job in one transaction), and read back by that FI alone.

    submit(gw, body)                 the signed message -> {"query_id", "status"} (202)
    view_for(gw, requester, qid)     the FI's view: status, the sealed result or the error,
                                     and its callback's delivery state; another FI's is 404

The job (``gateway/jobs/cdi_query.py``) releases the data; callbacks are
``gateway/jobs/callbacks.py``. A sealed result is personal data, even encrypted: it is purged a
while after the FI first collected it, or after ``cdi_result_ttl`` whatever happens
(``purge_results``).
"""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway import rate_limits, requester_registry
from gateway.errors import BadRequest, KeyReused, MessageReplayed, QueryNotFound, TokenNotHeld
from gateway.exchange.release import decide, live_grant
from gateway.jobs import outbox
from gateway.store.db import cdi_queries
from gateway.tokens import jose
from gateway.tokens.errors import TokenError
from schemas.cdi import QUERY_ID

from . import messages

import re

from .status import DONE, FAILED, QUEUED  # noqa: E402
JOB = "cdi.run_query"
_QUERY_ID = re.compile(QUERY_ID)


def _digest(message: dict) -> str:
    """What a query asks, so a new message reusing its query_id can be told apart: the same
    consent (whichever of its access tokens carries it: an FI refreshes them), items and
    callback is the same query; anything else is another query. The consent is read from the
    token unverified: the message is the FI's own (its signature checked), and a repeat only
    answers the query's state."""
    try:
        consent_id = jose.b64url_json(message["access_token"].split(".")[1]).get("consent_id")
    except (TokenError, IndexError):
        consent_id = None
    asked = [consent_id if isinstance(consent_id, str) else message["access_token"],
             message["items"], message.get("callback_url")]
    return hashlib.sha256(json.dumps(asked, separators=(",", ":")).encode()).hexdigest()


def _existing(conn, client_id: str, query_id: str):
    return conn.execute(select(cdi_queries).where(cdi_queries.c.client_id == client_id,
                                                  cdi_queries.c.query_id == query_id)).first()


def _same_query(row, digest: str) -> dict:
    if row.digest != digest:
        raise KeyReused("this query_id already names a different query (another access token, "
                        "items or callback_url); use a new query_id")
    return {"query_id": row.query_id, "status": row.status}


def submit(gw, body: str) -> dict:
    with gw.reads.connect() as conn:
        requester, message = messages.verify_message(
            gw, body, lambda client_id: requester_registry.get(conn, client_id))
    client_id, now = requester["client_id"], gw.clock.now()
    # the message's jti remembered (and the FI's rate counted) in one Redis round trip; with
    # Redis down this raises StoreUnavailable (503) and nothing is stored
    fresh = rate_limits.charge(gw, "cdi", client_id, replay_guard=(
        "cdi-message", f"{client_id}:{message['jti']}",
        messages.MAX_AGE + 2 * gw.config.clock_skew))
    if not fresh:
        raise MessageReplayed("this message (its jti) was received before; sign a new one "
                              "(the same query_id returns the same query)")
    digest = _digest(message)
    with gw.reads.connect() as conn:
        row = _existing(conn, client_id, message["query_id"])
    if row is not None:   # a new message for a query already made: the same query, no new work
        return _same_query(row, digest)
    try:
        claims = gw.access_tokens.verify(message["access_token"])  # the data API's checks
    except TokenError as exc:
        raise TokenError(f"the access token was refused: {exc.detail}") from exc
    if claims["client_id"] != client_id:
        raise TokenNotHeld("the access token was issued to another requester, not this FI")
    callback = message.get("callback_url")
    if callback is not None and callback not in (requester.get("callback_urls") or []):
        raise BadRequest("callback_url is not one of the FI's registered callback URLs",
                         errors={"callback_url": ["not registered for this FI"]})
    items = decide(live_grant(gw, claims), message["items"], now)  # live, within the consent
    values = dict(client_id=client_id, query_id=message["query_id"], digest=digest,
                  consent_id=claims["consent_id"], token_id=claims["jti"],
                  token_exp=claims["exp"], items=items, callback_url=callback, status=QUEUED,
                  created_at=now, delivery_attempts=0)

    def store(conn) -> dict:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        new_id = conn.execute(dialect.insert(cdi_queries).values(**values)
                              .on_conflict_do_nothing(index_elements=["client_id", "query_id"])
                              .returning(cdi_queries.c.id)).scalar()
        if new_id is None:   # the same query_id, submitted at the same moment, won
            return _same_query(_existing(conn, client_id, message["query_id"]), digest)
        outbox.add(conn, now, JOB, {"query": new_id}, key=f"{JOB}:{new_id}")
        return {"query_id": message["query_id"], "status": QUEUED}

    return gw.in_transaction(store)


def view_for(gw, requester: dict, query_id: str) -> dict:
    if not isinstance(query_id, str) or not _QUERY_ID.match(query_id):
        raise QueryNotFound()
    with gw.reads.connect() as conn:
        row = _existing(conn, requester["client_id"], query_id)
    if row is None:
        raise QueryNotFound()     # another FI's query looks exactly like none at all
    answer: dict = {"query_id": row.query_id, "status": row.status}
    if row.status == DONE:
        if row.result is not None:
            answer["result"] = row.result
            if row.collected_at is None:
                with gw.transaction() as conn:
                    conn.execute(update(cdi_queries).where(cdi_queries.c.id == row.id,
                                                           cdi_queries.c.collected_at.is_(None))
                                 .values(collected_at=gw.clock.now()))
        else:
            answer["error"] = {"code": "result-purged",
                               "detail": "the result was purged after it was collected or its "
                                         "time to be kept passed; submit a new query"}
    if row.status == FAILED and row.error:
        answer["error"] = row.error
    if row.callback_url is not None:
        answer["callback"] = {"url": row.callback_url, "delivery": row.delivery or "waiting",
                              "attempts": row.delivery_attempts}
        if row.delivery_error:
            answer["callback"]["last_error"] = row.delivery_error
    return answer


def purge_results(gw) -> int:
    """Drop sealed results collected more than ``cdi_collected_grace`` ago (the FI may fetch
    again meanwhile, if its first answer was lost) or finished more than ``cdi_result_ttl``
    ago; a result still waiting for its callback is kept until the callback ends."""
    now, config = gw.clock.now(), gw.config
    not_waiting = or_(cdi_queries.c.delivery.is_(None), cdi_queries.c.delivery != "pending")
    purged = 0
    with gw.transaction() as conn:   # two reads, each on its own index (collected, finished)
        for lapsed in (cdi_queries.c.collected_at <= now - config.cdi_collected_grace,
                       cdi_queries.c.finished_at <= now - config.cdi_result_ttl):
            purged += conn.execute(update(cdi_queries)
                                   .where(lapsed, cdi_queries.c.result.is_not(None), not_waiting)
                                   .values(result=None, purged_at=now)).rowcount
    return purged
