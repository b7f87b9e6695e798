"""GET /api/v1/consents/<consent_id>: the requester's view of a consent it holds (SPEC 4), with
its signed receipt. The caller shows an access token of that consent (verified: signature,
issuer, audience, not expired — a revoked consent's token still shows its status until it
expires); any other consent is 404, as if it did not exist."""
from __future__ import annotations

from flask import jsonify
from sqlalchemy import select

from gateway import runtime
from gateway.clock import rfc3339
from gateway.consent import ledger, liveness, receipt
from gateway.errors import ConsentNotFound, InvalidToken
from gateway.store.db import tokens

from .bearer import current_claims
from .data import bp


@bp.get("/consents/<consent_id>")
def consent_view(consent_id: str):
    claims = current_claims()
    gw = runtime.current()
    try:
        with gw.reads.connect() as conn:
            consent = ledger.get(conn, consent_id[:64])
            requester = gw.requester(conn, consent["client_id"])
            revoked_at = conn.execute(select(tokens.c.revoked_at)
                                      .where(tokens.c.token_id == claims["jti"])).scalar()
    except ConsentNotFound:
        consent = None
    if consent is None or claims["consent_id"] != consent["consent_id"] \
            or claims["client_id"] != consent["client_id"]:
        raise ConsentNotFound("no such consent")    # another's looks the same as none
    # a token revoked on its own (RFC 7009, a reused code) is refused; one revoked because its
    # consent ended still shows the requester that end
    if revoked_at is not None and liveness.is_live(consent, gw.clock.now()):
        raise InvalidToken("the access token was revoked")
    resp = jsonify(consent_id=consent["consent_id"],
                   status=liveness.status_now(consent, gw.clock.now()),
                   purpose=consent["purpose"], data_items=consent["data_items"],
                   expires_at=rfc3339(consent["expires_at"]) if consent["expires_at"] else None,
                   receipt=receipt.signed(gw, consent, requester))
    resp.headers["Cache-Control"] = "no-store"
    return resp
