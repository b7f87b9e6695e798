"""The requester registry: departments and FIs registered as OAuth clients, each with its public
JWKS, exact redirect URIs and its policy. Registration validates everything before storing."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from jwcrypto import jwk
from jwcrypto.common import JWException
from sqlalchemy import select
from sqlalchemy.engine import Connection

from gateway.store.db import requesters
from policies.engine import PolicyError, validate as validate_policy

KINDS = ("department", "fi")


class RequesterError(Exception):
    """A registration is invalid, or the requester is unknown."""


class UnknownRequester(RequesterError):
    pass


def check_jwks(doc) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise RequesterError("jwks: must be a JSON Web Key Set with at least one key")
    kids = set()
    for i, key in enumerate(doc["keys"]):
        if not isinstance(key, dict):
            raise RequesterError(f"jwks.keys[{i}]: not an object")
        if any(p in key for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise RequesterError(f"jwks.keys[{i}]: holds private key material; register public keys only")
        if not isinstance(key.get("kid"), str) or not key["kid"] or key["kid"] in kids:
            raise RequesterError(f"jwks.keys[{i}]: needs a unique kid")
        kids.add(key["kid"])
        if key.get("kty") not in ("EC", "RSA", "OKP"):
            raise RequesterError(f"jwks.keys[{i}]: kty must be EC, RSA or OKP")
        if key["kty"] == "EC" and key.get("crv") != "P-256":
            raise RequesterError(f"jwks.keys[{i}]: EC keys must be on P-256 (ES256)")
        if key["kty"] == "OKP" and key.get("crv") != "Ed25519":
            raise RequesterError(f"jwks.keys[{i}]: OKP keys must be Ed25519 (EdDSA)")
        try:
            parsed = jwk.JWK(**key)
        except (JWException, ValueError, TypeError) as exc:
            raise RequesterError(f"jwks.keys[{i}]: not a valid key ({exc})") from exc
        if key["kty"] == "RSA" and parsed.get_op_key("verify").key_size < 2048:
            raise RequesterError(f"jwks.keys[{i}]: RSA keys must be at least 2048 bits")
    return {"keys": doc["keys"]}


def check_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise RequesterError(f"redirect URI {uri!r}: must be an absolute http(s) URL without a fragment")
    return uri


def register(conn: Connection, now: int, *, client_id: str, name: str, jwks: dict,
             redirect_uris: list[str], kind: str = "department", policy: dict | None = None,
             name_zh: str | None = None, webhook_url: str | None = None) -> None:
    if not _well_formed_client_id(client_id):
        raise RequesterError("client_id: letters, digits, '-', '_' and '.' only, at most 64")
    if not name or len(name) > 200:
        raise RequesterError("name: required, at most 200 characters")
    if kind not in KINDS:
        raise RequesterError(f"kind: one of {', '.join(KINDS)}")
    if not redirect_uris:
        raise RequesterError("redirect URI: at least one")
    uris = [check_redirect_uri(u) for u in redirect_uris]
    jwks = check_jwks(jwks)
    if policy is not None:
        try:
            policy = validate_policy(policy, source=f"policy of {client_id}")
        except PolicyError as exc:
            raise RequesterError(str(exc)) from exc
        if policy["requester"] != client_id:
            raise RequesterError(f"policy: governs {policy['requester']!r}, not {client_id!r}")
    values = dict(name=name, name_zh=name_zh, kind=kind, jwks=jwks, redirect_uris=uris,
                  policy=policy, webhook_url=webhook_url)
    exists = conn.execute(select(requesters.c.client_id)
                          .where(requesters.c.client_id == client_id)).first()
    if exists:
        conn.execute(requesters.update().where(requesters.c.client_id == client_id).values(**values))
    else:
        conn.execute(requesters.insert().values(client_id=client_id, created_at=now, **values))


def _well_formed_client_id(client_id) -> bool:
    return isinstance(client_id, str) and 0 < len(client_id) <= 64 and \
        all(c.isascii() and (c.isalnum() or c in "-_.") for c in client_id)


def get(conn: Connection, client_id) -> dict:
    if not _well_formed_client_id(client_id):
        raise UnknownRequester("unknown client")
    row = conn.execute(select(requesters).where(requesters.c.client_id == client_id)).mappings().first()
    if row is None:
        raise UnknownRequester("unknown client")
    return dict(row)


class KeyCache:
    """Parsed client keys, keyed by client and the exact JWKS registered (a re-registration
    with new keys is seen at once)."""

    def __init__(self):
        self._cache: dict[tuple[str, str], dict[str, jwk.JWK]] = {}

    def key(self, requester: dict, kid) -> jwk.JWK | None:
        if not isinstance(kid, str):
            return None
        marker = json.dumps(requester["jwks"], sort_keys=True)
        keys = self._cache.get((requester["client_id"], marker))
        if keys is None:
            keys = {k["kid"]: jwk.JWK(**k) for k in requester["jwks"]["keys"]
                    if k.get("use", "sig") == "sig"}  # encryption keys never sign
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[(requester["client_id"], marker)] = keys
        return keys.get(kid)
