"""Making tokens the way an attacker (or a careless client) would: any header, any claims."""
from __future__ import annotations

import base64
import json

from jwcrypto import jws


def b64json(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def signed(key, claims: dict, header: dict) -> str:
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=header["alg"], protected=header)
    return token.serialize(compact=True)
