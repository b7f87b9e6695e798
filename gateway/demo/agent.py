"""A requester and a citizen acting over HTTP, as outside parties would: used by `cdeg demo`
and the benchmarks. They speak only the public contract (SPEC), nothing internal."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import requests
from jwcrypto import jwk, jws

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(key: jwk.JWK, client_id: str, audience: str, *, alg: str = "ES256",
                     lifetime: int = 60, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
              "exp": now + lifetime, "jti": secrets.token_urlsafe(16)}
    claims.update(overrides)
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=alg, protected={"alg": alg, "kid": key.get("kid"), "typ": "JWT"})
    return token.serialize(compact=True)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class Requester:
    def __init__(self, base_url: str, client_id: str, private_jwks: dict, redirect_uri: str,
                 http: requests.Session | None = None):
        self.base, self.client_id, self.redirect_uri = base_url.rstrip("/"), client_id, redirect_uri
        self.key = jwk.JWK(**private_jwks["keys"][0])
        self.http = http or requests.Session()

    def auth(self) -> dict:
        return {"client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(self.key, self.client_id, self.base)}

    def push(self, detail: dict, state: str = "s1") -> tuple[requests.Response, str]:
        verifier, challenge = pkce_pair()
        resp = self.http.post(self.base + "/oauth/par", data={
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
            "authorization_details": json.dumps([detail]), **self.auth()}, timeout=10)
        return resp, verifier

    def authorize_url(self, request_uri: str) -> str:
        from urllib.parse import urlencode
        return self.base + "/oauth/authorize?" + urlencode(
            {"client_id": self.client_id, "request_uri": request_uri})

    def token(self, code: str, verifier: str) -> requests.Response:
        return self.http.post(self.base + "/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
            "code_verifier": verifier, **self.auth()}, timeout=10)

    def data(self, access_token: str, items: str | None = None, accept: str = "application/json"):
        params = {"items": items} if items else None
        return self.http.get(self.base + "/api/v1/data", params=params, timeout=10, headers={
            "Authorization": f"Bearer {access_token}", "Accept": accept})

    def prefill(self, access_token: str, form_id: str) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/forms/{form_id}/prefill", timeout=10,
                              headers={"Authorization": f"Bearer {access_token}"})


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_DEMO_CODE = re.compile(r'id="demo-code">([0-9]{6})<')


class Citizen:
    """A citizen's browser, reduced to forms and redirects."""

    def __init__(self, base_url: str, hkid: str):
        self.base, self.hkid = base_url.rstrip("/"), hkid
        self.http = requests.Session()

    def _csrf(self, page: str) -> str:
        match = _CSRF.search(page)
        if not match:
            raise RuntimeError("no CSRF token on the page")
        return html.unescape(match.group(1))

    def open(self, url: str) -> requests.Response:
        """Follow redirects within the gateway (login first when asked)."""
        resp = self.http.get(url, timeout=10)
        if "/login" in resp.url and 'name="hkid"' in resp.text:
            page = resp.text
            next_url = re.search(r'name="next" value="([^"]*)"', page).group(1)
            resp = self.http.post(self.base + "/login", timeout=10, data={
                "csrf_token": self._csrf(page), "hkid": self.hkid,
                "next": html.unescape(next_url)})
            code = _DEMO_CODE.search(resp.text)
            if not code:
                raise RuntimeError("login refused or no demo code shown")
            resp = self.http.post(self.base + "/login/code", timeout=10, data={
                "csrf_token": self._csrf(resp.text), "code": code.group(1)})
        return resp

    def decide(self, consent_page: requests.Response, decision: str) -> dict:
        page = consent_page.text
        request_uri = html.unescape(re.search(r'name="request_uri" value="([^"]+)"', page).group(1))
        client_id = html.unescape(re.search(r'name="client_id" value="([^"]+)"', page).group(1))
        resp = self.http.post(self.base + "/oauth/authorize", allow_redirects=False, timeout=10,
                              data={"csrf_token": self._csrf(page), "request_uri": request_uri,
                                    "client_id": client_id, "decision": decision})
        if resp.status_code != 303:
            raise RuntimeError(f"decision answered {resp.status_code}")
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        return {k: v[0] for k, v in query.items()}

    def revoke(self, consent_id: str) -> requests.Response:
        page = self.http.get(self.base + "/me", timeout=10).text
        return self.http.post(f"{self.base}/me/consents/{consent_id}/revoke", timeout=10,
                              data={"csrf_token": self._csrf(page)})


class FI(Requester):
    """A financial institution on the CDI bridge (SPEC 5): signs query messages and polling
    assertions with its ``use: sig`` key, opens results with its ``use: enc`` key and checks
    the gateway's signature inside against ``/jwks.json``."""

    def __init__(self, base_url: str, client_id: str, private_jwks: dict, redirect_uri: str,
                 http: requests.Session | None = None):
        super().__init__(base_url, client_id, private_jwks, redirect_uri, http)
        self.key = jwk.JWK(**next(k for k in private_jwks["keys"] if k.get("use", "sig") == "sig"))
        self.enc_key = jwk.JWK(**next(k for k in private_jwks["keys"] if k.get("use") == "enc"))

    def message(self, query_id: str, access_token: str, items: list[str], *,
                callback_url: str | None = None, alg: str = "ES256", **overrides) -> str:
        claims = {"query_id": query_id, "iat": int(time.time()), "jti": secrets.token_urlsafe(16),
                  "access_token": access_token, "items": items}
        if callback_url is not None:
            claims["callback_url"] = callback_url
        claims.update(overrides)
        token = jws.JWS(json.dumps(claims).encode())
        token.add_signature(self.key, alg=alg, protected={"alg": alg, "kid": self.key.get("kid")})
        return token.serialize(compact=True)

    def submit(self, message: str) -> requests.Response:
        return self.http.post(self.base + "/cdi/v1/queries", data=message.encode("ascii"),
                              headers={"Content-Type": "application/jose"}, timeout=10)

    def poll(self, query_id: str) -> requests.Response:
        assertion = client_assertion(self.key, self.client_id, self.base + "/cdi")
        return self.http.get(f"{self.base}/cdi/v1/queries/{query_id}", timeout=10,
                             headers={"Authorization": f"Bearer {assertion}"})

    def wait(self, query_id: str, timeout: float = 30.0) -> dict:
        """Poll until the query is done or failed; its last answer."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.poll(query_id).json()
            if answer.get("status") in ("done", "failed") or time.monotonic() > deadline:
                return answer
            time.sleep(0.2)

    def open_result(self, sealed: str) -> dict:
        """Decrypt with the FI's key, verify the gateway's signature, answer the claims."""
        from jwcrypto import jwe
        outer = jwe.JWE()
        outer.allowed_algs = ["ECDH-ES+A256KW", "A256GCM"]
        outer.deserialize(sealed, key=self.enc_key)
        keys = jwk.JWKSet.from_json(self.http.get(self.base + "/jwks.json", timeout=10).text)
        inner = jws.JWS()
        inner.allowed_algs = ["ES256"]
        inner.deserialize(outer.payload.decode("ascii"))
        inner.verify(keys.get_key(inner.jose_header["kid"]), alg="ES256")
        claims = json.loads(inner.payload)
        if claims.get("iss") != self.base or claims.get("aud") != self.client_id:
            raise RuntimeError("the result is not from this gateway, or not for this FI")
        return claims
