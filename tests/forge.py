"""Making tokens the way an attacker (or a careless client) would: any header, any claims.

``raw_signed`` builds the compact JWS by hand and signs the signing input with
``cryptography``, so a refusal test can carry exactly one fault — a header jwcrypto would never
write (``crit``, ``zip``, an embedded ``jwk``, ...) on a token that is otherwise correctly signed
by the right key under the right ``kid``.
"""
from __future__ import annotations

import base64
import json

from jwcrypto import jws


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64json(data: dict) -> str:
    return b64(json.dumps(data).encode())


def signed(key, claims: dict, header: dict) -> str:
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=header["alg"], protected=header)
    return token.serialize(compact=True)


def raw_signed(key, header: dict | str, claims: dict | str, alg: str | None = None) -> str:
    """Compact JWS of exactly this header and payload (each a dict, or text as given), signed
    with ``key`` by ``alg`` or the algorithm the header names (ES256, PS256, RS256, EdDSA or
    HS256)."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    protected = header if isinstance(header, str) else json.dumps(header)
    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = (b64(protected.encode()) + "." + b64(payload.encode())).encode()
    alg = alg or header["alg"]
    if alg == "HS256":
        mac = hmac.HMAC(base64.urlsafe_b64decode(key.get("k") + "=="), hashes.SHA256())
        mac.update(signing_input)
        sig = mac.finalize()
    elif alg == "ES256":
        der = key.get_op_key("sign").sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "RS256":
        sig = key.get_op_key("sign").sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = key.get_op_key("sign").sign(
            signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size),
            hashes.SHA256())
    elif alg == "EdDSA":
        sig = key.get_op_key("sign").sign(signing_input)
    else:
        raise ValueError(f"raw_signed cannot sign {alg}")
    return signing_input.decode() + "." + b64(sig)


def dangerous_headers(public_jwk: dict) -> dict[str, dict]:
    """Header members the gateway refuses on any JWS, by name: a key or key location chosen by
    the token itself (``jku``, ``x5u``, ``x5c``, ``jwk`` — here the real public key, so nothing
    else is wrong), compression, and ``crit``. ``crit b64`` is a ``crit`` jwcrypto understands
    and accepts, so only the gateway's own guard refuses it; the guard's name is the first word."""
    return {
        "jku": {"jku": "https://evil.example/jwks"},
        "x5u": {"x5u": "https://evil.example/cert"},
        "x5c": {"x5c": [base64.b64encode(b"not really a certificate").decode()]},
        "jwk": {"jwk": public_jwk},
        "zip": {"zip": "DEF"},
        "crit unknown": {"crit": ["x-unknown"], "x-unknown": 1},
        "crit b64": {"crit": ["b64"], "b64": True},
    }


DANGEROUS_HEADERS = list(dangerous_headers({}))
