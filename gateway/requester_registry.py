"""The requester registry: departments and FIs registered as OAuth clients, each with its public
JWKS, exact redirect URIs and its policy. Registration validates everything before storing."""
from __future__ import annotations

import base64
import ipaddress
import json
import re

from jwcrypto import jwk
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from gateway.store.db import requesters
from gateway.errors import UnknownRequester
from policies.engine import PolicyError, validate as validate_policy

KINDS = ("department", "fi")


class RequesterError(Exception):
    """A registration is invalid (an operator's error, reported by the CLI)."""


__all__ = ["RequesterError", "UnknownRequester", "register", "get"]


def check_jwks(doc) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise RequesterError("jwks: must be a JSON Web Key Set with at least one key")
    kids = set()
    for i, key in enumerate(doc["keys"]):
        where = f"jwks.keys[{i}]"
        if not isinstance(key, dict):
            raise RequesterError(f"{where}: not an object")
        if any(p in key for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise RequesterError(f"{where}: holds private key material; register public keys only")
        if not isinstance(key.get("kid"), str) or not key["kid"] or key["kid"] in kids:
            raise RequesterError(f"{where}: needs a unique kid")
        kids.add(key["kid"])
        if key.get("kty") not in ("EC", "RSA", "OKP"):
            raise RequesterError(f"{where}: kty must be EC, RSA or OKP")
        if key["kty"] == "EC" and key.get("crv") != "P-256":
            raise RequesterError(f"{where}: EC keys must be on P-256 (ES256)")
        if key["kty"] == "OKP" and key.get("crv") != "Ed25519":
            raise RequesterError(f"{where}: OKP keys must be Ed25519 (EdDSA)")
        try:
            _CHECKS[key["kty"]](key)
        except ValueError as exc:
            raise RequesterError(f"{where}: {exc}") from exc
        # The library's own parse last: jwcrypto builds the key lazily, so ask for it.
        try:
            jwk.JWK(**key).get_op_key("encrypt" if key.get("use") == "enc" else "verify")
        except Exception as exc:  # noqa: BLE001 - any refusal by the library is a bad key
            raise RequesterError(f"{where}: not a valid key ({_one_line(exc)})") from exc
    return {"keys": doc["keys"]}


def _one_line(exc) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _b64url(key: dict, name: str, size: int | None = None) -> bytes:
    """The bytes in ``key[name]``, strict base64url without padding, of ``size`` if given."""
    value = key.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value) \
            or len(value) % 4 == 1:
        raise ValueError(f"{name}: must be base64url without padding")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if size is not None and len(raw) != size:
        raise ValueError(f"{name}: must be {size} bytes, not {len(raw)}")
    return raw


def _b64url_int(key: dict, name: str, size: int | None = None) -> int:
    return int.from_bytes(_b64url(key, name, size), "big")


# P-256 (SEC 2 / FIPS 186-4): y^2 = x^3 - 3x + b over GF(p)
_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def _check_ec(key: dict) -> None:
    x, y = _b64url_int(key, "x", 32), _b64url_int(key, "y", 32)
    if x >= _P256_P or y >= _P256_P or \
            (y * y - (x * x * x - 3 * x + _P256_B)) % _P256_P != 0:
        raise ValueError("the point (x, y) is not on the P-256 curve")


def _check_rsa(key: dict) -> None:
    n, e = _b64url_int(key, "n"), _b64url_int(key, "e")
    if n.bit_length() < 2048:
        raise ValueError(f"RSA keys must be at least 2048 bits (this modulus has {n.bit_length()})")
    if n % 2 == 0:
        raise ValueError("the RSA modulus n must be odd")
    if e < 3 or e % 2 == 0 or e >= n:
        raise ValueError(f"the RSA public exponent e must be odd and at least 3 "
                         f"(65537 is usual), not {e}")


# Ed25519 (RFC 8032 section 5.1.3): a public key is an encoded point that must decode
_ED_P = 2 ** 255 - 19
_ED_D = (-121665 * pow(121666, -1, _ED_P)) % _ED_P
_ED_SQRT_M1 = pow(2, (_ED_P - 1) // 4, _ED_P)


def _check_okp(key: dict) -> None:
    y = int.from_bytes(_b64url(key, "x", 32), "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _ED_P:
        raise ValueError("x: not an Ed25519 point (y out of range)")
    u, v = (y * y - 1) % _ED_P, (_ED_D * y * y + 1) % _ED_P
    x = (u * pow(v, 3, _ED_P) * pow(u * pow(v, 7, _ED_P), (_ED_P - 5) // 8, _ED_P)) % _ED_P
    if (v * x * x - u) % _ED_P != 0:
        x = (x * _ED_SQRT_M1) % _ED_P
        if (v * x * x - u) % _ED_P != 0:
            raise ValueError("x: not an Ed25519 point")
    if x == 0 and sign:
        raise ValueError("x: not an Ed25519 point (negative zero)")


_CHECKS = {"EC": _check_ec, "RSA": _check_rsa, "OKP": _check_okp}


# -- redirect URIs ----------------------------------------------------------------------------
# A redirect URI is stored as given (PAR matches it exactly) but only after it parses as an
# absolute https URL with a clean host; its origin, rebuilt from the parsed parts, is what the
# consent page names in its Content-Security-Policy.

LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+\Z")   # RFC 3986, ASCII only
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_AUTHORITY = re.compile(r"(\[[^\]/?#@]*\]|[^:\[\]/?#@]*)(?::([0-9]{1,5}))?\Z")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def _parse_origin(uri) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an absolute http(s) URL, host lowercased and IPv6 bracketed;
    ValueError naming what is wrong otherwise."""
    if not isinstance(uri, str) or not uri:
        raise ValueError("must be a non-empty string")
    if len(uri) > 2000:
        raise ValueError("longer than 2000 characters")
    if not _URI_CHARS.match(uri):
        raise ValueError("holds a character a URI may not (space, quote, control or non-ASCII)")
    if _BAD_PERCENT.search(uri):
        raise ValueError("holds a '%' that is not a percent-encoding")
    if "#" in uri:
        raise ValueError("must not have a fragment")
    scheme = _SCHEME.match(uri)
    if not scheme or scheme.group(1).lower() not in ("https", "http"):
        raise ValueError("must be an absolute https URL")
    rest = uri[scheme.end():]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority = rest[:cut]
    if "@" in authority:
        raise ValueError("must not carry user information (user@ or user:password@)")
    parts = _AUTHORITY.match(authority)
    if not parts or not parts.group(1):
        raise ValueError("needs a host, and a port (if any) of digits only")
    host, port = parts.group(1).lower(), parts.group(2)
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("host is not a valid IPv6 address") from None
        if address.scope_id:
            raise ValueError("host must not carry an IPv6 zone")
        host = f"[{address.compressed}]"
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("host is not a valid IPv4 address") from None
    else:
        labels = host.split(".")
        if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise ValueError("host is not a valid DNS name (letters, digits, '-' and '.'; "
                             "punycode for non-ASCII names)")
        if re.fullmatch(r"[0-9]+|0x[0-9a-f]*", labels[-1]):
            raise ValueError("host must not end in a numeric label")
    number = None
    if port is not None:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError("port must be between 1 and 65535")
    return scheme.group(1).lower(), host, number


def check_redirect_uri(uri: str, *, demo: bool = False) -> str:
    """The URI, if it is fit to register: absolute https, a valid host, no userinfo, no
    fragment; http only for a loopback host, and only in demo mode."""
    try:
        scheme, host, _ = _parse_origin(uri)
        if scheme == "http":
            if host not in LOOPBACK_HOSTS:
                raise ValueError("must be https (http only for a loopback host: "
                                 + ", ".join(LOOPBACK_HOSTS) + ", in demo mode)")
            if not demo:
                raise ValueError("http on a loopback host is for demo mode only, "
                                 "not under CDEG_ENV=production; use https")
    except ValueError as exc:
        shown = uri[:200] if isinstance(uri, str) else uri
        raise RequesterError(f"redirect URI {shown!r}: {exc}") from None
    return uri


def csp_origin(uri) -> str | None:
    """The origin of a redirect URI as a CSP source (``scheme://host[:port]``), rebuilt from
    the parsed parts; None when the URI does not parse cleanly (a row registered before
    redirect URIs were checked), so nothing of it reaches the header."""
    try:
        scheme, host, port = _parse_origin(uri)
    except ValueError:
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")       # RFC 6052: an IPv4 address inside
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")           # RFC 3056: an IPv4 address inside


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    raw = int(address)
    if address in _NAT64 or (raw >> 32 == 0 and raw > 1):   # NAT64, or ::a.b.c.d
        return ipaddress.IPv4Address(raw & 0xFFFFFFFF)
    return None


def _is_internal(host: str) -> bool:
    """A loopback, link-local, private, unspecified, multicast or reserved address (or a name
    that always means this machine), also when an IPv6 address carries such an IPv4 one
    (mapped, compatible, NAT64, 6to4): never a push's destination outside demo mode."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL or address.is_site_local:
            return True
        inner = _embedded_ipv4(address)
        if inner is not None:
            address = inner
    return not address.is_global or address.is_multicast


def check_callback_url(uri: str, *, demo: bool = False, what: str = "callback URL") -> str:
    """A URL the gateway will push to (an FI's CDI callback URL, a requester's event
    endpoint), if it is fit to register: absolute https with a valid host, no userinfo, no
    fragment, and never a loopback, link-local or private address; in demo mode http (and
    https) on a loopback host is admitted too (SPEC 6)."""
    try:
        scheme, host, _ = _parse_origin(uri)
        loopback = host in LOOPBACK_HOSTS
        if demo and loopback:
            return uri
        if scheme != "https":
            raise ValueError("must be https (http only for a loopback host, in demo mode)")
        if _is_internal(host):
            raise ValueError("must not name a loopback, link-local or private address"
                             + ("" if demo else " (outside demo mode)"))
    except ValueError as exc:
        shown = uri[:200] if isinstance(uri, str) else uri
        raise RequesterError(f"{what} {shown!r}: {exc}") from None
    return uri


# The algorithm each registered key is pinned to: the key's own ``alg`` if it names one, else
# the one its type allows (a P-256 key signs ES256 only, an RSA key PS256, Ed25519 EdDSA).
SIGNING_ALGS = {"EC": "ES256", "RSA": "PS256", "OKP": "EdDSA"}
ENCRYPTION_ALG = "ECDH-ES+A256KW"


def pinned_alg(key: dict) -> str:
    return key.get("alg") or SIGNING_ALGS[key["kty"]]


def check_fi_jwks(jwks: dict) -> None:
    """An FI signs CDI messages with a ``use: sig`` key and receives results encrypted to a
    ``use: enc`` key (JWE ECDH-ES+A256KW on P-256): it registers at least one of each."""
    keys = jwks["keys"]
    for i, key in enumerate(keys):
        use = key.get("use", "sig")
        if use not in ("sig", "enc"):
            raise RequesterError(f"jwks.keys[{i}]: use must be sig or enc")
        if use == "enc" and (key["kty"] != "EC" or key.get("alg", ENCRYPTION_ALG) != ENCRYPTION_ALG):
            raise RequesterError(f"jwks.keys[{i}]: an encryption key must be an EC P-256 key for "
                                 f"{ENCRYPTION_ALG}")
        if use == "sig" and key.get("alg") not in (None, SIGNING_ALGS[key["kty"]]):
            raise RequesterError(f"jwks.keys[{i}]: alg {key.get('alg')!r} does not fit a "
                                 f"{key['kty']} signing key ({SIGNING_ALGS[key['kty']]})")
    if not any(key.get("use", "sig") == "sig" for key in keys):
        raise RequesterError("jwks: an FI needs a signing key (\"use\": \"sig\") for its CDI messages")
    if not any(key.get("use") == "enc" for key in keys):
        raise RequesterError("jwks: an FI needs an encryption key (\"use\": \"enc\", EC P-256) "
                             "for its CDI results")


def register(conn: Connection, now: int, *, client_id: str, name: str, jwks: dict,
             redirect_uris: list[str], kind: str = "department", policy: dict | None = None,
             name_zh: str | None = None, webhook_url: str | None = None,
             callback_urls: list[str] | None = None, demo: bool = False) -> None:
    """Validate everything, then insert or update. ``demo`` (the gateway is not
    CDEG_ENV=production) also admits http redirect URIs on a loopback host, and http callback
    URLs on a loopback host. Only an FI registers callback URLs, and an FI needs both a
    signing and an encryption key."""
    if not well_formed_client_id(client_id):
        raise RequesterError("client_id: letters, digits, '-', '_' and '.' only, at most 64")
    if not name or len(name) > 200:
        raise RequesterError("name: required, at most 200 characters")
    if kind not in KINDS:
        raise RequesterError(f"kind: one of {', '.join(KINDS)}")
    if not isinstance(redirect_uris, (list, tuple)) or not redirect_uris:
        raise RequesterError("redirect URI: at least one")
    uris = [check_redirect_uri(u, demo=demo) for u in redirect_uris]
    jwks = check_jwks(jwks)
    callbacks = list(callback_urls or [])
    if kind == "fi":
        check_fi_jwks(jwks)
        if len(callbacks) > 20:
            raise RequesterError("callback URL: at most 20")
        callbacks = [check_callback_url(u, demo=demo) for u in callbacks]
    elif callbacks:
        raise RequesterError("callback URL: only an FI (--kind fi) registers CDI callback URLs")
    if webhook_url is not None:
        webhook_url = check_callback_url(webhook_url, demo=demo, what="event endpoint")
    if policy is not None:
        try:
            policy = validate_policy(policy, source=f"policy of {client_id}")
        except PolicyError as exc:
            raise RequesterError(str(exc)) from exc
        if policy["requester"] != client_id:
            raise RequesterError(f"policy: governs {policy['requester']!r}, not {client_id!r}")
    values = dict(name=name, name_zh=name_zh, kind=kind, jwks=jwks, redirect_uris=uris,
                  policy=policy, webhook_url=webhook_url, callback_urls=callbacks or None)
    exists = conn.execute(select(requesters.c.client_id)
                          .where(requesters.c.client_id == client_id)).first()
    if exists:
        conn.execute(requesters.update().where(requesters.c.client_id == client_id).values(**values))
    else:
        conn.execute(requesters.insert().values(client_id=client_id, created_at=now, **values))


def check_stored_policies(conn: Connection) -> None:
    """Every registered requester's policy still names only known items and forms (a catalogue
    item or a form file removed since it was registered): PolicyError naming the requester and
    the key, so the gateway does not start on a policy it cannot apply."""
    if not inspect(conn).has_table("requesters"):
        return                                   # not migrated yet: nothing registered
    for client_id, policy in conn.execute(select(requesters.c.client_id, requesters.c.policy)):
        if policy is not None:
            validate_policy(policy, source=f"policy of {client_id}")


def well_formed_client_id(client_id) -> bool:
    return isinstance(client_id, str) and 0 < len(client_id) <= 64 and \
        all(c.isascii() and (c.isalnum() or c in "-_.") for c in client_id)


def get(conn: Connection, client_id) -> dict:
    if not well_formed_client_id(client_id):
        raise UnknownRequester("unknown client")
    row = conn.execute(select(requesters).where(requesters.c.client_id == client_id)).mappings().first()
    if row is None:
        raise UnknownRequester("unknown client")
    return dict(row)


class KeyCache:
    """Parsed client keys, keyed by client and the exact JWKS registered (a re-registration
    with new keys is seen at once)."""

    def __init__(self):
        self._cache: dict[tuple[str, str], dict[str, tuple[jwk.JWK, str]]] = {}

    def _keys(self, requester: dict, use: str) -> dict[str, tuple[jwk.JWK, str]]:
        marker = json.dumps(requester["jwks"], sort_keys=True)
        keys = self._cache.get((requester["client_id"], use, marker))
        if keys is None:   # encryption keys never sign, signing keys never encrypt
            keys = {k["kid"]: (jwk.JWK(**k), pinned_alg(k) if use == "sig" else ENCRYPTION_ALG)
                    for k in requester["jwks"]["keys"] if k.get("use", "sig") == use}
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[(requester["client_id"], use, marker)] = keys
        return keys

    def key(self, requester: dict, kid) -> jwk.JWK | None:
        if not isinstance(kid, str):
            return None
        found = self._keys(requester, "sig").get(kid)
        return None if found is None else found[0]

    def pinned(self, requester: dict, kid) -> tuple[jwk.JWK, str] | None:
        """A signing key by ``kid`` and the one algorithm it may sign with."""
        return self._keys(requester, "sig").get(kid) if isinstance(kid, str) else None

    def encryption_key(self, requester: dict) -> jwk.JWK | None:
        """The FI's encryption key (its first registered ``use: enc`` key)."""
        keys = self._keys(requester, "enc")
        return next(iter(keys.values()))[0] if keys else None
