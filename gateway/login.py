"""The mock iAM Smart login: an HKID, then a 6-digit second factor.

A real deployment replaces this with iAM Smart's OpenID Connect; the gateway only needs a
verified HKID at the end. The person must be known to the Immigration Department (the ImmD
connector answers). The code is kept hashed in the citizen's server-side session, lives 5
minutes and allows 5 attempts.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from connectors.base import ConnectorError, SubjectNotFound
from gateway import citizen as citizens
from gateway import throttle
from schemas.hkid import InvalidHKID, normalise

CODE_TTL = 300
MAX_ATTEMPTS = 5


class LoginError(Exception):
    """Shown to the citizen on the login page; the message key is translated."""


def _code_hash(secret: bytes, hkid: str, code: str) -> str:
    return hmac.new(secret, f"{hkid}|{code}".encode(), hashlib.sha256).hexdigest()


def start(gw, raw_hkid) -> tuple[dict, str]:
    """Answer (pending login to keep in the session, the code to deliver)."""
    try:
        hkid = normalise(raw_hkid)
    except InvalidHKID as exc:
        raise LoginError(str(exc)) from exc
    # per citizen, whatever address the attempts come from (the HKID itself is not the key)
    throttle.check(gw, "login-citizen", _code_hash(gw.session_secret, hkid, "")[:32],
                   gw.config.login_rate_per_minute)
    try:
        gw.router.connectors["immd"].fetch(hkid, [])
    except SubjectNotFound as exc:
        raise LoginError("iAM Smart does not know this HKID") from exc
    except ConnectorError as exc:
        raise LoginError("iAM Smart cannot be reached just now; try again shortly") from exc
    code = f"{secrets.randbelow(10**6):06d}"
    pending = {"hkid": hkid, "code_hash": _code_hash(gw.session_secret, hkid, code),
               "expires_at": gw.clock.now() + CODE_TTL, "attempts": 0,
               "id": secrets.token_urlsafe(16)}
    return pending, code


def verify(gw, pending: dict | None, code) -> dict:
    """Check the second factor; answer the citizen row (enrolled on first login)."""
    if not pending:
        raise LoginError("start again: enter your HKID first")
    if pending["expires_at"] <= gw.clock.now() or pending["attempts"] >= MAX_ATTEMPTS:
        raise LoginError("the code has expired; start again")
    pending["attempts"] += 1
    # counted in Redis too, atomically: parallel guesses on one session cannot pass the limit
    if gw.redis.hit("login-code", pending["id"], MAX_ATTEMPTS, CODE_TTL):
        pending["attempts"] = MAX_ATTEMPTS
        raise LoginError("the code has expired; start again")
    if not isinstance(code, str) or not code.isdigit() or len(code) != 6 or not hmac.compare_digest(
            _code_hash(gw.session_secret, pending["hkid"], code), pending["code_hash"]):
        raise LoginError("the code does not match")
    with gw.transaction() as conn:
        return citizens.enrol(conn, gw.clock.now(), pending["hkid"])
