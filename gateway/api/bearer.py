"""RFC 6750 bearer tokens: from the Authorization header only, never the query or body."""
from __future__ import annotations

from flask import request as _request

from gateway import runtime

from gateway.tokens.errors import TokenError


def current_claims(req=None) -> dict:
    """The verified claims of the request's bearer token (``req``: the request, if the caller
    holds it already)."""
    request = req if req is not None else _request._get_current_object()
    # RFC 6750 2.2: a token in the body is a form-encoded one; any other body is not looked in
    in_form = request.mimetype == "application/x-www-form-urlencoded" and \
        "access_token" in request.form
    if "access_token" in request.args or in_form:
        raise TokenError("tokens are accepted in the Authorization header only")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("a Bearer access token is required")
    return runtime.current().access_tokens.verify(token.strip())
