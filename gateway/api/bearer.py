"""RFC 6750 bearer tokens: from the Authorization header only, never the query or body."""
from __future__ import annotations

from flask import request

from gateway import runtime

from gateway.tokens.errors import TokenError


def current_claims() -> dict:
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
