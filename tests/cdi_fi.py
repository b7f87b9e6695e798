"""An FI on the CDI bridge, driven through Flask's test client: signs query messages and
polling assertions with the demo bank's keys (or keys of its own), opens sealed results."""
from __future__ import annotations

import json
import secrets

from jwcrypto import jwe, jwk, jws

from gateway.demo.agent import client_assertion
from gateway.demo.seed import private_jwks


def bank_keys() -> tuple[jwk.JWK, jwk.JWK]:
    keys = private_jwks("bank-of-example")["keys"]
    return (jwk.JWK(**next(k for k in keys if k["use"] == "sig")),
            jwk.JWK(**next(k for k in keys if k["use"] == "enc")))


def new_fi_keys(prefix: str) -> tuple[jwk.JWK, jwk.JWK, dict]:
    sig = jwk.JWK.generate(kty="EC", crv="P-256", kid=f"{prefix}-sig", use="sig", alg="ES256")
    enc = jwk.JWK.generate(kty="EC", crv="P-256", kid=f"{prefix}-enc", use="enc",
                           alg="ECDH-ES+A256KW")
    public = {"keys": [json.loads(sig.export_public()), json.loads(enc.export_public())]}
    return sig, enc, public


def sign(claims: dict | bytes, key: jwk.JWK, *, alg: str = "ES256",
         header: dict | None = None) -> str:
    token = jws.JWS(claims if isinstance(claims, bytes) else json.dumps(claims).encode())
    protected = {"alg": alg, "kid": key.get("kid")} if header is None else header
    token.add_signature(key, alg=alg, protected=json.dumps(protected))
    return token.serialize(compact=True)


class FIClient:
    def __init__(self, flow, client_id: str = "bank-of-example", keys=None):
        self.flow, self.gw, self.client_id = flow, flow.gw, client_id
        self.sig, self.enc = keys or bank_keys()
        self.http = flow.app.test_client()

    def claims(self, access_token: str, items: list[str], query_id: str | None = None,
               **overrides) -> dict:
        claims = {"query_id": query_id or "q-" + secrets.token_hex(6), "iat": self.gw.clock.now(),
                  "jti": secrets.token_urlsafe(12), "access_token": access_token, "items": items}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def message(self, access_token: str, items: list[str], query_id: str | None = None,
                **overrides) -> str:
        return sign(self.claims(access_token, items, query_id, **overrides), self.sig)

    def submit(self, message: str, content_type: str = "application/jose"):
        return self.http.post("/cdi/v1/queries", data=message,
                              headers={"Content-Type": content_type})

    def assertion(self, **overrides) -> str:
        now = self.gw.clock.now()
        return client_assertion(self.sig, self.client_id, self.gw.config.issuer + "/cdi",
                                **{"iat": now, "exp": now + 60, **overrides})

    def poll(self, query_id: str, assertion: str | None = None):
        return self.http.get(f"/cdi/v1/queries/{query_id}", headers={
            "Authorization": f"Bearer {assertion or self.assertion()}"})

    def open(self, sealed: str) -> tuple[dict, dict]:
        """(the JWE's protected header, the claims of the gateway's JWS inside), verified."""
        outer = jwe.JWE()
        outer.deserialize(sealed, key=self.enc)
        inner = jws.JWS()
        inner.deserialize(outer.payload.decode("ascii"))
        keys = jwk.JWKSet.from_json(self.http.get("/jwks.json").get_data(as_text=True))
        inner.verify(keys.get_key(inner.jose_header["kid"]), alg="ES256")
        return outer.jose_header, json.loads(inner.payload)
