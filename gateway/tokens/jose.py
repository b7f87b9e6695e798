"""Strict JWS verification (RFC 8725) in front of jwcrypto, and compact signing.

Every JWS the gateway accepts passes here: the header is inspected before any key is touched
(only compact JWS, an allowed ``alg``, a known ``kid``, no ``jku``/``x5u``/``jwk``/``x5c``,
no ``zip``, no ``crit``), then jwcrypto verifies with ``algs``, ``expected_type="JWS"`` and
``check_claims`` naming every claim the caller needs, and finally claim types are checked
again (jwcrypto accepts ``"exp": "123"`` as an integer).
"""
from __future__ import annotations

import base64
import json

from jwcrypto import jwk, jws, jwt
from jwcrypto.common import JWException

from .errors import TokenError

MAX_TOKEN_BYTES = 8 * 1024
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "zip", "crit")


def b64url_json(segment: str) -> dict:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise TokenError("malformed token") from exc
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    _encodable(value)
    return value


def _encodable(value: dict) -> None:
    """JSON may escape a lone surrogate (``"\\ud800"``) that no UTF-8 store or key can hold."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError) as exc:
        raise TokenError("malformed token: not valid Unicode") from exc


def unverified_header(token: str) -> dict:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token missing or too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a compact JWS")
    return b64url_json(parts[0])


def check_header(header: dict, algs: list[str], typ: str | None) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algs:
        raise TokenError("alg not accepted")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenError(f"header {name} not accepted")
    if typ is not None:
        got = header.get("typ")
        if not isinstance(got, str) or got.lower() not in (typ, "application/" + typ):
            raise TokenError(f"typ must be {typ}")
    if not isinstance(header.get("kid", ""), str):
        raise TokenError("kid must be a string")


def verify(token: str, key: jwk.JWK, *, algs: list[str], now: int, issuer: str | None,
           audience: str | list[str] | None, typ: str | None = None,
           required: tuple[str, ...] = ("exp", "iat", "jti"), max_lifetime: int | None = None,
           header: dict | None = None, skew: int) -> dict:
    """Verify signature and claims; answer the claims dict or raise TokenError. ``skew``: how
    far ahead of ``now`` an ``iat``/``nbf`` may lie (the settings' ``clock_skew``)."""
    header = header if header is not None else unverified_header(token)
    check_header(header, algs, typ)
    check_claims: dict = {name: None for name in required}
    check_claims["exp"] = now
    if issuer is not None:
        check_claims["iss"] = issuer
    if audience is not None:
        check_claims["aud"] = audience
    try:
        decoded = jwt.JWT(jwt=token, key=key, algs=algs, expected_type="JWS",
                          check_claims=check_claims)
        claims = json.loads(decoded.claims)
    except jwt.JWTExpired as exc:
        raise TokenError("token expired") from exc
    except jwt.JWTMissingClaim as exc:
        raise TokenError(str(exc)) from exc
    except jwt.JWTInvalidClaimValue as exc:
        raise TokenError("a claim has the wrong value (iss, aud or sub)") from exc
    except (JWException, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        # OverflowError: a number such as 1e400 in a time claim; RecursionError: deep nesting
        raise TokenError("token signature or claims invalid") from exc
    if not isinstance(claims, dict):
        raise TokenError("claims must be a JSON object")
    _encodable(claims)
    for name in ("exp", "iat", "nbf"):
        if name in claims and (not isinstance(claims[name], int) or isinstance(claims[name], bool)):
            raise TokenError(f"{name} must be a number")
    for name in ("iat", "nbf"):
        if name in claims and claims[name] > now + skew:
            raise TokenError(f"{name} is in the future")
    if not isinstance(claims.get("jti", ""), str):
        raise TokenError("jti must be a string")
    if max_lifetime is not None and claims["exp"] > now + max_lifetime + skew:
        raise TokenError("token lives too long")
    return claims


def sign(claims: dict, key: jwk.JWK, *, typ: str, alg: str = "ES256") -> str:
    token = jws.JWS(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    token.add_signature(key, alg=alg, protected={"alg": alg, "kid": key.get("kid"), "typ": typ})
    return token.serialize(compact=True)
