"""Access tokens: RFC 9068 JWTs signed ES256 by the gateway, and their verification.

A verified token is cached in-process by its SHA-256 until its ``exp`` (the signature and
claims cannot change); the live consent and the token's own revocation are still read from SQL
on every call, which is what makes revocation immediate.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
from typing import NewType

from . import jose
from .errors import TokenError


# Claims that passed ``AccessTokenVerifier.verify``: a release can only be given these.
VerifiedClaims = NewType("VerifiedClaims", dict)


def new_jti() -> str:
    return secrets.token_urlsafe(18)


def mint(keyring, *, issuer: str, audience: str, subject: str, client_id: str, consent_id: str,
         authorization_details: list, now: int, ttl: int,
         notice_digest: str | None = None) -> tuple[str, dict]:
    claims = {"iss": issuer, "sub": subject, "aud": audience, "client_id": client_id,
              "iat": now, "nbf": now, "exp": now + ttl, "jti": new_jti(),
              "consent_id": consent_id, "authorization_details": authorization_details}
    if notice_digest:   # the consent screen the citizen saw (a private claim)
        claims["notice_digest"] = notice_digest
    return jose.sign(claims, keyring.signing_key, typ="at+jwt"), claims


class AccessTokenVerifier:
    def __init__(self, keyring, issuer: str, audience: str, clock, lifetime: int, skew: int,
                 max_cached: int = 20000):
        self.keyring, self.issuer, self.audience, self.clock = keyring, issuer, audience, clock
        self.lifetime, self.skew = lifetime, skew
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.max_cached = max_cached

    def verify(self, token: str) -> VerifiedClaims:
        now = self.clock.now()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest() \
            if isinstance(token, str) else ""
        cached = self._cache.get(digest)
        if cached is not None:
            if cached["exp"] > now:
                return VerifiedClaims(cached)
            raise TokenError("token expired")
        header = jose.unverified_header(token)
        key = self.keyring.verification_key(header.get("kid"),
                                            retired_within=self.lifetime + self.skew)
        claims = jose.verify(token, key, algs=["ES256"], now=now, issuer=self.issuer,
                             audience=self.audience, typ="at+jwt", header=header,
                             required=("exp", "iat", "jti", "sub", "client_id", "consent_id"),
                             max_lifetime=self.lifetime, skew=self.skew)
        for name in ("client_id", "consent_id", "sub"):
            if not isinstance(claims[name], str):
                raise TokenError(f"{name} must be a string")
        with self._lock:
            if len(self._cache) >= self.max_cached:
                self._cache = {k: v for k, v in self._cache.items() if v["exp"] > now}
                if len(self._cache) >= self.max_cached:
                    self._cache.clear()
            self._cache[digest] = claims
        return VerifiedClaims(claims)
