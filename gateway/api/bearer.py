"""RFC 6750 bearer tokens: from the Authorization header only, never the query or body."""
from __future__ import annotations

from flask import request

from gateway import runtime

from gateway.tokens.errors import TokenError


def current_claims() -> dict:
    if "access_token" in request.args or "access_token" in request.form:
        raise TokenError("tokens are accepted in the Authorization header only")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("a Bearer access token is required")
    return runtime.current().access_tokens.verify(token.strip())
