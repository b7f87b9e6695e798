"""The OAuth endpoints: thin views that parse the form, call the grant, render JSON."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from . import client_auth, grant
from .errors import InvalidRequest, UnsupportedGrantType

from gateway import http_errors, metrics, runtime

bp = Blueprint("oauth", __name__)
http_errors.use(bp, http_errors.as_oauth)
MAX_PARAM = 8192



def _form() -> dict:
    """The form body as a plain dict: form-encoded only, each parameter once (RFC 6749 3.1)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    if request.args:
        raise InvalidRequest("parameters belong in the body, not the query string")
    form = {}
    for key, values in request.form.lists():
        if len(values) != 1:
            raise InvalidRequest(f"parameter {key} is repeated")
        if len(values[0]) > MAX_PARAM:
            raise InvalidRequest(f"parameter {key} is too long")
        if "\x00" in values[0] or "\x00" in key:
            raise InvalidRequest(f"parameter {key[:40]} holds a NUL character")
        form[key] = values[0]
    return form


def _json(body: dict, status: int = 200):
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _authenticated(conn, form: dict) -> dict:
    """The requester behind the form's client assertion (RFC 7523), or InvalidClient."""
    return client_auth.authenticate(runtime.current(), conn, form, request.path)


@bp.post("/oauth/par")
def par():
    form = _form()
    with runtime.current().transaction() as conn:
        return _json(grant.push(runtime.current(), conn, _authenticated(conn, form), form), 201)


@bp.post("/oauth/token")
def token():
    form = _form()
    grant_type = form.get("grant_type")
    if grant_type not in ("authorization_code", "refresh_token"):
        if not grant_type:
            raise InvalidRequest("grant_type missing")
        raise UnsupportedGrantType("grant_type must be authorization_code or refresh_token")
    gw = runtime.current()
    exchange = grant.exchange_code if grant_type == "authorization_code" else grant.refresh
    requester = None
    if exchange is grant.exchange_code and gw.prepared is not None:
        at_once = grant.exchange_code_at_once(gw, form, request.path)
        if at_once.body is not None:
            metrics.tokens_minted(at_once.body)
            return _json(at_once.body)
        requester = at_once.requester   # authenticated: its assertion's jti is spent
    with gw.transaction() as conn:
        outcome = exchange(gw, conn, requester or _authenticated(conn, form), form)
    if isinstance(outcome, grant.Refused):  # committed: the spent code, the revoked tokens
        raise outcome.error
    metrics.tokens_minted(outcome)
    return _json(outcome)


@bp.post("/oauth/revoke")
def revoke():
    form = _form()
    with runtime.current().transaction() as conn:
        requester = _authenticated(conn, form)
        if "token" not in form:
            raise InvalidRequest("token missing")
        grant.revoke(runtime.current(), conn, requester, form)
    return _json({})


@bp.post("/oauth/introspect")
def introspect():
    form = _form()
    with runtime.current().db.connect() as conn:
        requester = _authenticated(conn, form)
        if "token" not in form:
            raise InvalidRequest("token missing")
        return _json(grant.introspect(runtime.current(), conn, requester, form))
