"""GET /api/v1/data: the consented items, as JSON or as a JWS signed by the gateway."""
from __future__ import annotations

import json

from flask import Blueprint, request

from gateway import http_errors, rate_limits, runtime
from gateway.errors import BadRequest, MethodNotAllowed, NotAcceptable
from gateway.exchange.release import parse_items, release
from gateway.tokens import jose
from gateway.tokens.access import new_jti

from .bearer import current_claims

bp = Blueprint("api", __name__, url_prefix="/api/v1")
http_errors.use(bp, http_errors.as_problem)

JSON, JWT = "application/json", "application/jwt"
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode   # built once


@bp.get("/data")
def data():
    req = request._get_current_object()   # read many times below: the proxy looked up once
    if req.method != "GET":  # Flask adds HEAD to GET routes; a HEAD must release nothing
        raise MethodNotAllowed("use GET", headers={"Allow": "GET"})
    args = req.args
    if len(args.getlist("items")) > 1:
        raise BadRequest("give items once, comma-separated",
                         errors={"items": ["repeated"]})
    claims = current_claims(req)
    gw = runtime.current()
    rate_limits.charge(gw, "client", claims["client_id"])
    unknown = set(args) - {"items"}
    if unknown:
        raise BadRequest("unknown query parameter",
                         errors={k: ["unknown parameter"] for k in sorted(unknown)})
    accept = req.accept_mimetypes
    wanted = accept.best_match([JSON, JWT], default=JSON) if accept else JSON
    if accept and accept.quality(wanted) == 0:
        raise NotAcceptable("answers are application/json or application/jwt")
    body = release(gw, claims, parse_items(args.get("items")))
    if wanted == JWT:
        now = gw.clock.now()
        signed = jose.sign({"iss": gw.config.issuer, "aud": claims["client_id"], "iat": now,
                            "jti": new_jti(), **body}, gw.keyring.signing_key, typ="cdeg-data+jwt")
        return signed, 200, {"Content-Type": JWT, "Cache-Control": "no-store"}
    return _COMPACT(body), 200, \
        {"Content-Type": JSON, "Cache-Control": "no-store"}
