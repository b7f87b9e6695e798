"""The mock iAM Smart login: an HKID, then a 6-digit second factor.

A real deployment replaces this with iAM Smart's OpenID Connect; the gateway only needs a
verified HKID at the end. The person must be known to the Immigration Department (the ImmD
connector answers). The code is kept hashed in the citizen's server-side session, lives 5
minutes and allows 5 attempts. Messages are keys of gateway/web/i18n.py.

Nobody learns whether an HKID is known
--------------------------------------
Every well-formed HKID gets the same answer: a pending login and a 303 to the code page (in
demo mode with a code in ``#demo-code``). For a number ImmD does not know, the pending login
holds the hash of a random 256-bit secret that nobody sees instead of the code's, so no code
ever verifies; its checks go through the same counters and the same HMAC comparison and end
in the same "the code does not match". Refused on the login page are only a malformed HKID
(pattern or check digit: a fact about the string, not a person) and "iAM Smart cannot be
reached" when ImmD does not answer usefully, whatever the HKID.

Guessing codes without locking the citizen out
----------------------------------------------
A code is 6 digits: 10^6 values. The limits:

* Starting a login: 20 a minute per address (``login_rate_per_minute``, shared with code
  posts). Never per citizen: starting logins for someone costs them nothing.
* Each pending login: 5 code checks within its 5 minutes (in the session, and in Redis so
  parallel posts of one session cannot pass it).
* Wrong codes per citizen (all addresses, sessions and browsers), in Redis, in fixed windows
  of the gateway clock; a correct code costs nothing:
  - browsers without a device mark of that citizen share one budget: 10 per 15 minutes and
    50 per UTC day;
  - a device mark is a signed cookie (``cdeg_device``, 30 days, no HKID in it) given to the
    browser at a successful login; each marked browser has a budget of its own, 5 per 15
    minutes, that no one else's guesses touch.
  A unit is reserved before the code is compared (one MULTI), so parallel posts cannot pass a
  budget; once it is spent, codes from its browsers are not compared at all (429 with
  Retry-After, on the code page) until its window ends.

The bound: whoever holds none of the citizen's device marks, from any number of addresses and
sessions, gets at most 10 code comparisons per citizen per 15-minute window (so at most 20 in
any 15 minutes, across a window edge) and 50 per day: at most a 10 in 10^6 chance per window,
50 in 10^6 per day, of hitting a code.

Lockout: strangers can spend only the shared budget. The citizen's own browser, once it has
logged in, keeps its budget and gets in while the attack goes on. What an attacker can still
deny is a login from a browser the citizen has never used (or whose cookies were cleared)
during an active attack, until the window (or day) ends: the price of a fixed bound. Real
identity providers make the same trade (OWASP's device cookies, Entra smart lockout's
familiar locations). Addresses are not trusted that way: mobile networks share them (CGNAT).

Redis down: the budgets cannot be read, so no code is compared (503).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

from connectors.base import ConnectorError, SubjectNotFound
from gateway import citizens
from gateway import rate_limits
from gateway.errors import Throttled
from schemas.hkid import InvalidHKID, normalise

log = logging.getLogger("cdeg")

CODE_FORMAT = re.compile(r"[0-9]{6}")  # ASCII digits: str.isdigit() takes any script's
DEVICE_COOKIE = "cdeg_device"

_HKID_ERRORS = {"HKID check digit does not match": "login.error.check_digit"}


class LoginError(Exception):
    """Shown to the citizen on the login page; the message is a key of i18n.TEXT."""


def _code_hash(secret: bytes, hkid: str, code: str) -> str:
    return hmac.new(secret, f"{hkid}|{code}".encode(), hashlib.sha256).hexdigest()


def _citizen_key(gw, hkid: str) -> str:
    """Names the citizen in Redis keys and device marks without the HKID."""
    return hmac.new(gw.session_secret, f"login-citizen|{hkid}".encode(),
                    hashlib.sha256).hexdigest()[:32]


def _mark_mac(gw, citizen: str, device: str) -> str:
    return hmac.new(gw.session_secret, f"device|{citizen}|{device}".encode(),
                    hashlib.sha256).hexdigest()[:32]


def new_device_mark(gw, hkid: str) -> str:
    """The cookie value a browser gets at a successful login of this citizen."""
    device = secrets.token_urlsafe(12)
    return f"{device}.{_mark_mac(gw, _citizen_key(gw, hkid), device)}"


def _marked_device(gw, citizen: str, mark) -> str | None:
    """The device id of a mark given to this citizen, or None."""
    if not isinstance(mark, str) or len(mark) > 100 or mark.count(".") != 1:
        return None
    device, mac = mark.split(".")
    if device and hmac.compare_digest(mac.encode(), _mark_mac(gw, citizen, device).encode()):
        return device
    return None


def start(gw, raw_hkid) -> tuple[dict, str]:
    """Answer (pending login to keep in the session, the code to deliver), the same for a
    number ImmD knows and one it does not."""
    try:
        hkid = normalise(raw_hkid)
    except InvalidHKID as exc:
        raise LoginError(_HKID_ERRORS.get(str(exc), "login.error.format")) from exc
    try:
        gw.router.connectors["immd"].fetch(hkid, [])
        known = True
    except SubjectNotFound:
        known = False
    except ConnectorError as exc:
        log.warning("login: ImmD gave no usable answer (%s)", type(exc).__name__)
        raise LoginError("login.error.unavailable") from exc
    code = f"{secrets.randbelow(10**6):06d}"
    hashed = code if known else secrets.token_hex(32)  # unknown: no code can ever match
    pending = {"hkid": hkid, "known": known,
               "code_hash": _code_hash(gw.session_secret, hkid, hashed),
               "expires_at": gw.clock.now() + gw.config.login_code_ttl, "attempts": 0,
               "id": secrets.token_urlsafe(16)}
    return pending, code


def _budgets(config, citizen: str, device: str | None) -> list[tuple[str, str, int, int]]:
    if device:
        return [("login-wrong-code-marked", f"{citizen}:{device}", config.marked_wrong_codes,
                 config.wrong_code_window)]
    return [("login-wrong-code", citizen, config.unmarked_wrong_codes, config.wrong_code_window),
            ("login-wrong-code-day", citizen, config.unmarked_wrong_codes_a_day,
             config.wrong_code_day)]


def verify(gw, pending: dict | None, code, device_mark: str | None = None) -> dict:
    """Check the second factor; answer the citizen row (enrolled on first login).

    Raises LoginError, or Throttled when the wrong-code budget of this browser for
    this citizen is spent (the code is then not compared)."""
    if not pending:
        raise LoginError("code.error.start_again")
    if pending["expires_at"] <= gw.clock.now() or pending["attempts"] >= gw.config.login_code_attempts:
        raise LoginError("code.error.expired")
    citizen = _citizen_key(gw, pending["hkid"])
    held = rate_limits.reserve(gw, _budgets(gw.config, citizen, _marked_device(gw, citizen, device_mark)))
    pending["attempts"] += 1
    # counted in Redis too, atomically: parallel guesses on one session cannot pass the limit
    try:
        rate_limits.charge(gw, "login-code", pending["id"], limit=gw.config.login_code_attempts,
                           window=gw.config.login_code_ttl)
    except Throttled:
        rate_limits.give_back(gw, held)  # not compared: not a guess
        pending["attempts"] = gw.config.login_code_attempts
        raise LoginError("code.error.expired")
    well_formed = isinstance(code, str) and CODE_FORMAT.fullmatch(code) is not None
    matches = hmac.compare_digest(
        _code_hash(gw.session_secret, pending["hkid"], code if well_formed else ""),
        pending["code_hash"])
    # ("known" missing: a pending login from before the flag, when only known HKIDs got one)
    if not (matches and well_formed and pending.get("known", True)):
        raise LoginError("code.error.mismatch")  # the reserved unit stays spent
    rate_limits.give_back(gw, held)
    with gw.transaction() as conn:
        return citizens.enrol(conn, gw.clock.now(), pending["hkid"], gw.sealer)
