"""RFC 7636 PKCE, S256 only (plain is refused)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .errors import InvalidGrant, InvalidRequest

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def check_method(method) -> None:
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def check_verifier(verifier, challenge: str) -> None:
    if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
        raise InvalidGrant("code_verifier missing or malformed")
    if not hmac.compare_digest(challenge_of(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
