"""What an FI sends the CDI bridge, verified before anything is read or stored:

- a **query message**: a compact JWS signed by one of the FI's registered ``use: sig`` keys
  (``kid`` required, the algorithm pinned to that key), ``iat`` at most 5 minutes old and not in
  the future, ``exp``/``nbf``/``aud`` checked when present; no ``jku``/``x5u``/``jwk``/``x5c``,
  ``zip`` or ``crit``; a JWE, a nested JWS (``cty``) or an unsigned one (``alg: none``, or HS256
  made with a public key) refused;
- a **polling assertion**: the FI's self-signed JWT as a Bearer, ``iss`` = ``sub`` = its
  ``client_id``, ``aud`` = ``<issuer>/cdi``, ``exp`` at most 5 minutes ahead, ``jti``.

Which FI signed a message: its ``iss`` when present, else the ``client_id`` of the access token
it carries (read unverified only to find the keys; the message's signature decides).
"""
from __future__ import annotations

import json

from jwcrypto import jws
from jwcrypto.common import JWException
from marshmallow import ValidationError

from gateway import rate_limits, requester_registry
from gateway.errors import BadRequest, MessageRefused
from gateway.tokens import jose
from gateway.tokens.errors import TokenError
from schemas.cdi import QueryMessage

MAX_MESSAGE_BYTES = 16 * 1024
MAX_AGE = 300                       # a message's iat at most this old (seconds)
MAX_ASSERTION_LIFETIME = 300
SIGNING_ALGS = sorted(set(requester_registry.SIGNING_ALGS.values()))
_SCHEMA = QueryMessage()


def _segments(token) -> list[str]:
    if not isinstance(token, str) or not token or not token.isascii():
        raise MessageRefused("the body must be a compact JWS (ASCII)")
    if len(token) > MAX_MESSAGE_BYTES:
        raise MessageRefused(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) == 5:
        raise MessageRefused("a JWE was sent where a signed message (compact JWS) is expected")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise MessageRefused("not a compact JWS (header.payload.signature)")
    return parts


def _header(segment: str) -> dict:
    try:
        header = jose.b64url_json(segment)
        jose.check_header(header, SIGNING_ALGS, typ=None)
    except TokenError as exc:
        raise MessageRefused(f"header refused: {exc}") from exc
    if "cty" in header:
        raise MessageRefused("a nested or typed payload (cty) is not accepted: sign the JSON itself")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise MessageRefused("the header needs the kid of the FI's registered signing key")
    return header


def _unverified(segment: str) -> dict:
    try:
        return jose.b64url_json(segment)
    except TokenError as exc:
        raise MessageRefused("the payload is not a JSON object") from exc


def _fi(find, client_id) -> dict:
    if not requester_registry.well_formed_client_id(client_id):
        raise MessageRefused("the message names no known FI (iss, or the access token's client_id)")
    try:
        requester = find(client_id)
    except requester_registry.UnknownRequester as exc:
        raise MessageRefused("the message names no known FI") from exc
    if requester["kind"] != "fi":
        raise MessageRefused("only a registered FI (a CDI participant) may use the CDI bridge")
    return requester


def _pinned_key(gw, requester: dict, header: dict):
    found = gw.client_keys.pinned(requester, header["kid"])
    if found is None:
        raise MessageRefused("the kid is not one of the FI's registered signing keys")
    key, alg = found
    if header["alg"] != alg:
        raise MessageRefused(f"key {header['kid']} signs {alg} only, not {header['alg']}")
    return key, alg


def verify_message(gw, token, find) -> tuple[dict, dict]:
    """``(requester, payload)`` of a query message whose signature, header and claims hold;
    ``find(client_id)`` reads a requester (raising ``UnknownRequester``). MessageRefused (401)
    or BadRequest (400, a field named) otherwise."""
    parts = _segments(token)
    header = _header(parts[0])
    unverified = _unverified(parts[1])
    client_id = unverified.get("iss")
    if client_id is None and isinstance(unverified.get("access_token"), str):
        try:
            client_id = jose.b64url_json(unverified["access_token"].split(".")[1]).get("client_id")
        except (TokenError, IndexError):
            client_id = None
    requester = _fi(find, client_id)
    key, alg = _pinned_key(gw, requester, header)
    signed = jws.JWS()
    signed.allowed_algs = [alg]
    try:
        signed.deserialize(token.strip())
        signed.verify(key, alg=alg)
        payload = json.loads(signed.payload)
    except (JWException, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise MessageRefused("the message's signature does not verify with the FI's key") from exc
    if not isinstance(payload, dict):
        raise MessageRefused("the payload is not a JSON object")
    try:
        message = _SCHEMA.load(payload)
    except ValidationError as exc:
        raise BadRequest("the query message has bad fields",
                         errors={k: [str(m) for m in (v if isinstance(v, list) else [v])]
                                 for k, v in exc.normalized_messages().items()}) from exc
    _check_times(gw, message)
    if message.get("iss", requester["client_id"]) != requester["client_id"]:
        raise MessageRefused("iss must be the FI's client_id")
    return requester, message


def _check_times(gw, message: dict) -> None:
    now, skew = gw.clock.now(), gw.config.clock_skew
    if message["iat"] > now + skew:
        raise MessageRefused("iat is in the future")
    if message["iat"] < now - MAX_AGE:
        raise MessageRefused(f"iat is more than {MAX_AGE // 60} minutes old: sign a new message")
    if "exp" in message and message["exp"] <= now:
        raise MessageRefused("the message expired (exp)")
    if "nbf" in message and message["nbf"] > now + skew:
        raise MessageRefused("the message is not valid yet (nbf)")
    if "aud" in message:
        aud = message["aud"]
        aud = aud[0] if isinstance(aud, list) and len(aud) == 1 else aud
        if aud not in (gw.config.issuer, gw.config.issuer + "/cdi"):
            raise MessageRefused("aud must name this gateway (its issuer, or <issuer>/cdi)")


def verify_assertion(gw, authorization: str, find) -> dict:
    """The FI behind a polling request's ``Authorization: Bearer <self-signed JWT>``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MessageRefused("send the FI's self-signed JWT as Authorization: Bearer",
                             credentials=bool(authorization))
    try:
        header = jose.unverified_header(token)
        unverified = jose.b64url_json(token.split(".")[1])
    except TokenError as exc:
        raise MessageRefused(f"the assertion is not a compact JWS: {exc}") from exc
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise MessageRefused("the assertion's header needs the kid of the FI's signing key")
    requester = _fi(find, unverified.get("iss"))
    key, alg = _pinned_key(gw, requester, header)
    try:
        claims = jose.verify(token, key, algs=[alg], now=gw.clock.now(),
                             issuer=requester["client_id"], audience=gw.config.issuer + "/cdi",
                             header=header, required=("exp", "jti", "sub"),
                             max_lifetime=MAX_ASSERTION_LIFETIME, skew=gw.config.clock_skew)
    except TokenError as exc:
        raise MessageRefused(f"the assertion was refused: {exc}") from exc
    if claims.get("sub") != requester["client_id"]:
        raise MessageRefused("the assertion's sub must be the FI's client_id")
    if claims["exp"] > gw.clock.now() + MAX_ASSERTION_LIFETIME + 5:
        raise MessageRefused("the assertion's exp is more than 5 minutes ahead")
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    if not isinstance(audience, str):   # this gateway's CDI alone, not one audience among others
        raise MessageRefused("the assertion's aud must name <issuer>/cdi alone")
    if not claims["jti"] or len(claims["jti"]) > 200:
        raise MessageRefused("the assertion needs a jti (at most 200 characters)")
    # each assertion once, as a client assertion (RFC 7523 3): a captured one cannot be
    # played again to read the FI's queries; the FI's rate counted in the same round trip
    client_id = requester["client_id"]
    if not rate_limits.charge(gw, "cdi", client_id, replay_guard=(
            "cdi-assertion", f"{client_id}:{claims['jti']}",
            claims["exp"] - gw.clock.now() + 2 * gw.config.clock_skew)):
        raise MessageRefused("the assertion's jti was used before: sign a new one for each request")
    return requester
