"""Results sealed for one FI: a JWS signed by the gateway (so the FI can keep it as evidence),
encrypted to the FI's registered ``use: enc`` key as a compact JWE (``ECDH-ES+A256KW`` with
``A256GCM``, ``cty: JWT``: RFC 7516, RFC 7519 section 5.2). Never compressed."""
from __future__ import annotations

import json

from jwcrypto import jwe, jwk

from . import jose

KEY_ALG, CONTENT_ENC = "ECDH-ES+A256KW", "A256GCM"


def seal(claims: dict, signing_key: jwk.JWK, encryption_key: jwk.JWK, *, typ: str) -> str:
    signed = jose.sign(claims, signing_key, typ=typ)
    header = {"alg": KEY_ALG, "enc": CONTENT_ENC, "cty": "JWT"}
    if encryption_key.get("kid"):
        header["kid"] = encryption_key.get("kid")
    token = jwe.JWE(signed.encode("ascii"), protected=json.dumps(header))
    token.add_recipient(encryption_key)
    return token.serialize(compact=True)
