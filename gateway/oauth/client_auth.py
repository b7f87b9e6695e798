"""private_key_jwt client authentication (RFC 7523 section 2.2, FAPI 2.0 rules).

The assertion: signed ES256, PS256 or EdDSA by a key in the client's registered JWKS;
``iss`` = ``sub`` = ``client_id``; ``aud`` the issuer (or the token endpoint, or the URL of
the endpoint being called, as RFC 9126 section 2 allows for PAR), alone: an array naming
another audience beside it is refused, as the assertion could be replayed there; ``exp`` in the
future but at most 5 minutes ahead; ``iat`` not more than 60 s ahead; ``jti`` never seen before
(remembered in Redis until the assertion could no longer be used).
"""
from __future__ import annotations

from gateway import rate_limits, requester_registry
from gateway.errors import StoreUnavailable, Throttled
from gateway.tokens import jose
from gateway.tokens.errors import TokenError

from .errors import InvalidClient, SlowDown, TemporarilyUnavailable

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGS = ["ES256", "PS256", "EdDSA"]


def authenticate(gw, conn, form, endpoint: str = "/oauth/token") -> dict:
    """Answer the authenticated requester's row, or raise InvalidClient."""
    return authenticate_with(gw, form, endpoint, lambda client_id: requester_registry.get(
        conn, client_id))


def authenticate_with(gw, form, endpoint: str, find) -> dict:
    """``authenticate``, the requester's row given by ``find(client_id)`` (which raises
    ``UnknownRequester``): a caller that read it together with something else."""
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidClient("client_assertion_type must be jwt-bearer (private_key_jwt)")
    assertion = form.get("client_assertion")
    try:
        header = jose.unverified_header(assertion)
        unverified = jose.b64url_json(assertion.split(".")[1])
    except TokenError as exc:
        raise InvalidClient("client_assertion is not a compact JWS") from exc
    client_id = unverified.get("iss")
    if form.get("client_id") is not None and form.get("client_id") != client_id:
        raise InvalidClient("client_id does not match the assertion's iss")
    if not requester_registry.well_formed_client_id(client_id):
        raise InvalidClient("unknown client")
    try:
        requester = find(client_id)
    except requester_registry.UnknownRequester as exc:
        raise InvalidClient("unknown client") from exc
    kid = header.get("kid")
    if kid is None and len(requester["jwks"]["keys"]) == 1:
        kid = requester["jwks"]["keys"][0]["kid"]
    key = gw.client_keys.key(requester, kid)
    if key is None:
        raise InvalidClient("the assertion's kid is not in the client's registered JWKS")
    now = gw.clock.now()
    try:
        claims = jose.verify(assertion, key, algs=ALGS, now=now, issuer=client_id,
                             audience=sorted({gw.config.issuer, gw.config.issuer + "/oauth/token",
                                              gw.config.issuer + endpoint}),
                             header=header, required=("exp", "jti", "sub"),
                             skew=gw.config.clock_skew)
    except TokenError as exc:
        raise InvalidClient(f"client_assertion refused: {exc}") from exc
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    if not isinstance(audience, str):  # one audience, this gateway's, not one among others
        raise InvalidClient("client_assertion aud must name this gateway alone")
    if claims.get("sub") != client_id:
        raise InvalidClient("client_assertion sub must equal client_id")
    if claims["exp"] > now + gw.config.client_assertion_max_ahead + 5:
        raise InvalidClient("client_assertion exp is more than 5 minutes ahead")
    if not claims["jti"] or len(claims["jti"]) > 200:
        raise InvalidClient("client_assertion jti missing or too long")
    try:  # replay guard and the client's OAuth rate limit, one Redis round trip
        fresh = rate_limits.charge(gw, "oauth", client_id, replay_guard=(
            "assertion", f"{client_id}:{claims['jti']}", claims["exp"] - now + 60))
    except StoreUnavailable as exc:
        raise TemporarilyUnavailable() from exc
    except Throttled as exc:
        raise SlowDown(exc.retry_after) from exc
    if not fresh:
        raise InvalidClient("client_assertion jti was already used")
    return requester
