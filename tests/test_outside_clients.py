"""The grant driven by clients the project did not write, over a real socket.

Authlib's OAuth 2.0 client (private_key_jwt, PKCE S256) plays the bank; a plain ``requests``
session plays the citizen's browser; PyJWT, a second JOSE library, checks the access token
and the signed data against ``/jwks.json`` alone (SPEC 3 and 4).
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc.jwk import ECKey

from gateway.demo.seed import private_jwks

from .flow import BANK, BANK_DETAIL, HKID, TD, redirect_uri_of
from .live import live_gateway  # noqa: F401 - the fixture

BANK_REDIRECT, TD_REDIRECT = redirect_uri_of(BANK), redirect_uri_of(TD)
TD_DETAIL = {"type": "cdeg_data", "purpose": "vehicle-licence-renewal", "access": "once",
             "data_items": ["identity.name_en", "identity.hkid", "address.residential"]}


@pytest.fixture(autouse=True)
def _plain_http_on_loopback(monkeypatch):
    # Authlib refuses http:// endpoints unless told; the live gateway is http on 127.0.0.1.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


# -- the requester: Authlib ---------------------------------------------------------------------

class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a 60 s assertion.

    Authlib signs assertions valid for an hour by default, which the gateway rightly refuses
    (SECURITY: ``exp`` at most 5 minutes ahead). ``claims={"exp": ...}`` is no way out: Authlib
    stores the generated ``jti`` in that dict, so every later assertion would replay it.
    """

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                    token_endpoint=token_endpoint, header=dict(self.headers),
                                    alg=self.alg, expires_in=60)


class AuthlibRequester:
    def __init__(self, metadata: dict, client_id: str, redirect_uri: str):
        self.meta, self.client_id, self.redirect_uri = metadata, client_id, redirect_uri
        key = ECKey.import_key(private_jwks(client_id)["keys"][0])
        self.session = OAuth2Session(client_id, key, token_endpoint_auth_method="private_key_jwt",
                                     revocation_endpoint_auth_method="private_key_jwt",
                                     redirect_uri=redirect_uri, code_challenge_method="S256",
                                     default_timeout=10)
        # aud = the issuer, as SPEC 3 and FAPI 2.0 ask (Authlib's default would be the URL posted to).
        self.session.register_client_auth_method(
            ShortLivedPrivateKeyJWT(metadata["issuer"], headers={"kid": key.kid}, alg="ES256"))
        self.verifier = self.state = None

    def client_auth(self):
        return self.session.client_auth(self.session.token_endpoint_auth_method)

    def push(self, detail: dict) -> requests.Response:
        """RFC 9126: the authorization request's parameters, as Authlib builds them, POSTed."""
        self.verifier = generate_token(48)
        url, self.state = self.session.create_authorization_url(
            self.meta["pushed_authorization_request_endpoint"], code_verifier=self.verifier,
            authorization_details=json.dumps([detail]))
        form = dict(parse_qsl(urlsplit(url).query))
        assert form["code_challenge_method"] == "S256" and form["response_type"] == "code"
        return self.session.post(self.meta["pushed_authorization_request_endpoint"], data=form,
                                 auth=self.client_auth(), withhold_token=True)

    def authorize_url(self, request_uri: str) -> str:
        return self.meta["authorization_endpoint"] + "?" + urlencode(
            {"client_id": self.client_id, "request_uri": request_uri})

    def fetch_token(self, callback_url: str) -> dict:
        return self.session.fetch_token(self.meta["token_endpoint"],
                                        authorization_response=callback_url, state=self.state,
                                        code_verifier=self.verifier)


# -- the citizen: a plain requests session reading the HTML forms --------------------------------

class Forms(HTMLParser):
    """Every <form> on a page: action, method, named inputs, submit buttons."""

    def __init__(self, page: str):
        super().__init__()
        self.forms: list[dict] = []
        self._button = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action", ""), "method": attrs.get("method", "get"),
                               "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "button" and self.forms:
            self._button = {"name": attrs.get("name"), "value": attrs.get("value"), "text": ""}
            self.forms[-1]["buttons"].append(self._button)

    def handle_endtag(self, tag):
        if tag == "button":
            self._button = None

    def handle_data(self, data):
        if self._button is not None:
            self._button["text"] += data

    def with_button(self, label: str) -> tuple[dict, dict]:
        for form in self.forms:
            for button in form["buttons"]:
                if " ".join(button["text"].split()).endswith(label):
                    return form, button
        raise AssertionError(f"no form with a button {label!r}")


def submit(http: requests.Session, page: requests.Response, button: str, **values):
    form, pressed = Forms(page.text).with_button(button)
    assert form["method"].lower() == "post"
    data = {**form["fields"], **values}
    if pressed["name"]:
        data[pressed["name"]] = pressed["value"] or ""
    return http.post(urljoin(page.url, form["action"]), data=data, allow_redirects=False,
                     timeout=10)


def follow(http: requests.Session, resp: requests.Response) -> requests.Response:
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    return http.get(urljoin(resp.url, resp.headers["Location"]), timeout=10)


def citizen_approves(authorize_url: str, hkid: str = HKID) -> str:
    """Log in (HKID, then the demo code), approve; answer the redirect back to the requester."""
    browser = requests.Session()
    page = browser.get(authorize_url, timeout=10)
    assert urlsplit(page.url).path == "/login", page.url
    page = follow(browser, submit(browser, page, "Log in", hkid=hkid))
    code = re.search(r'id="demo-code">\s*(\d{6})\s*<', page.text)
    assert code, "the demo code is not shown on the code page"
    page = follow(browser, submit(browser, page, "Verify", code=code.group(1)))
    assert urlsplit(page.url).path == "/oauth/authorize" and page.status_code == 200
    answer = submit(browser, page, "Approve")
    assert answer.status_code == 303
    return answer.headers["Location"]


# -- the checks -----------------------------------------------------------------------------------

def metadata_of(base: str) -> dict:
    resp = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    return resp.json()


def grant(base: str, client_id: str, redirect_uri: str, detail: dict):
    """The whole grant with Authlib; answer (the requester, its token, the callback query)."""
    requester = AuthlibRequester(metadata_of(base), client_id, redirect_uri)
    resp = requester.push(detail)
    assert resp.status_code == 201, resp.text
    pushed = resp.json()
    assert pushed["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert 60 <= pushed["expires_in"] <= 600
    callback = citizen_approves(requester.authorize_url(pushed["request_uri"]))
    assert callback.startswith(redirect_uri + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert query["iss"] == base and query["state"] == requester.state  # RFC 9207
    token = requester.fetch_token(callback)
    return requester, token, query


def verify_access_token(base: str, access_token: str) -> dict:
    """PyJWT, keys from /jwks.json only."""
    header = jwt.get_unverified_header(access_token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    jwks = requests.get(base + "/jwks.json", timeout=10).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert header["kid"] in {k.key_id for k in jwt.PyJWKSet.from_dict(jwks).keys}
    signing_key = jwt.PyJWKClient(base + "/jwks.json", cache_keys=False).get_signing_key_from_jwt(
        access_token)
    assert signing_key.key_id == header["kid"]
    return jwt.decode(access_token, signing_key, algorithms=["ES256"], audience=base + "/api",
                      issuer=base, options={"require": ["iss", "sub", "aud", "client_id", "iat",
                                                        "exp", "jti", "consent_id",
                                                        "authorization_details"]})


def test_metadata_is_rfc8414_and_every_url_starts_with_the_issuer(live_gateway):
    base = live_gateway.base
    meta = metadata_of(base)
    assert meta["issuer"] == base
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    urls = {k: v for k, v in meta.items() if isinstance(v, str) and "://" in v}
    assert {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
            "pushed_authorization_request_endpoint"} <= set(urls)
    for name, url in urls.items():
        assert url.startswith(base), (name, url)
        assert url == base or url.startswith(base + "/"), (name, url)
    # Authlib's RFC 8414 checks (http allowed on loopback, see the fixture above), among them:
    # a *_auth_signing_alg_values_supported entry for every endpoint that takes private_key_jwt.
    AuthorizationServerMetadata(meta).validate()


def test_authlib_client_drives_the_grant_and_pyjwt_verifies_what_comes_back(live_gateway):
    base = live_gateway.base
    bank, token, _ = grant(base, BANK, BANK_REDIRECT, BANK_DETAIL)
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 600
    assert token["authorization_details"] == [BANK_DETAIL]
    assert token["consent_id"] and token.get("refresh_token")  # ongoing consent

    # The data API with the token Authlib holds (Authorization: Bearer ...).
    resp = bank.session.get(base + "/api/v1/data")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["consent_id"] == token["consent_id"]
    assert body["subject"] == jwt.decode(token["access_token"], options={"verify_signature": False})["sub"]
    assert set(body["items"]) == set(BANK_DETAIL["data_items"])
    assert body["items"]["identity.name_en"]["value"] == "CHAN, Tai Man"
    assert body["items"]["identity.hkid"]["value"] == HKID
    for item in body["items"].values():
        assert {"value", "source", "verified", "as_of"} <= set(item)

    # The access token, by a second JOSE library (RFC 9068).
    claims = verify_access_token(base, token["access_token"])
    assert claims["iss"] == base and claims["aud"] == base + "/api"
    assert claims["client_id"] == BANK
    assert claims["consent_id"] == token["consent_id"]
    assert claims["authorization_details"] == [BANK_DETAIL]
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert isinstance(claims["sub"], str) and claims["sub"]
    assert HKID not in json.dumps(claims) and "A1234563" not in json.dumps(claims)

    # The signed data body, kept as evidence: a JWS for the bank, verifiable with /jwks.json.
    resp = bank.session.get(base + "/api/v1/data", headers={"Accept": "application/jwt"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/jwt")
    signed = resp.text.strip()
    header = jwt.get_unverified_header(signed)
    assert header["alg"] == "ES256"
    key = jwt.PyJWKClient(base + "/jwks.json", cache_keys=False).get_signing_key_from_jwt(signed)
    evidence = jwt.decode(signed, key, algorithms=["ES256"], audience=BANK, issuer=base,
                          options={"require": ["iss", "aud", "iat"]})
    assert evidence["consent_id"] == body["consent_id"]
    assert evidence["subject"] == body["subject"]
    assert evidence["items"].keys() == body["items"].keys()
    assert evidence["items"]["identity.hkid"]["value"] == HKID
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(signed, key, algorithms=["ES256"], audience=TD, issuer=base)

    # The subject is pairwise: the same citizen, granted to the Transport Department, is
    # someone else to it.
    td, td_token, _ = grant(base, TD, TD_REDIRECT, TD_DETAIL)
    td_claims = verify_access_token(base, td_token["access_token"])
    assert td_claims["client_id"] == TD and td_claims["consent_id"] != claims["consent_id"]
    assert td_claims["sub"] != claims["sub"]
    resp = td.session.get(base + "/api/v1/data")
    assert resp.status_code == 200
    assert resp.json()["items"]["identity.hkid"]["value"] == HKID   # the same citizen indeed


def test_authlib_refreshes_introspects_and_revokes(live_gateway):
    """RFC 6749 refresh (rotated), RFC 7662 introspection and RFC 7009 revocation, each with
    Authlib's own call and private_key_jwt."""
    base = live_gateway.base
    bank, token, _ = grant(base, BANK, BANK_REDIRECT, BANK_DETAIL)
    meta, session = bank.meta, bank.session
    first_refresh = token["refresh_token"]

    fresh = session.refresh_token(meta["token_endpoint"])
    assert fresh["refresh_token"] != first_refresh                 # rotated on every use
    assert fresh["consent_id"] == token["consent_id"]
    assert verify_access_token(base, fresh["access_token"])["consent_id"] == token["consent_id"]
    resp = session.introspect_token(meta["introspection_endpoint"], token=fresh["access_token"])
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["active"] is True and answer["client_id"] == BANK
    assert answer["consent_id"] == token["consent_id"]

    # Another requester learns nothing about the bank's token.
    td = AuthlibRequester(metadata_of(base), TD, TD_REDIRECT)
    resp = td.session.introspect_token(meta["introspection_endpoint"], token=fresh["access_token"])
    assert resp.status_code == 200 and resp.json() == {"active": False}

    # The rotated refresh token replayed: refused, and the whole family dies (RFC 9700 4.14.2).
    with pytest.raises(OAuthError) as refused:
        session.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
    assert refused.value.error == "invalid_grant"
    resp = session.introspect_token(meta["introspection_endpoint"], token=fresh["refresh_token"])
    assert resp.json() == {"active": False}
    bank, token, _ = grant(base, BANK, BANK_REDIRECT, BANK_DETAIL)
    meta, session = bank.meta, bank.session
    fresh = session.refresh_token(meta["token_endpoint"])

    resp = session.revoke_token(meta["revocation_endpoint"], token=fresh["access_token"],
                                token_type_hint="access_token")
    assert resp.status_code == 200
    resp = session.get(base + "/api/v1/data", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    resp = session.introspect_token(meta["introspection_endpoint"], token=fresh["access_token"])
    assert resp.json() == {"active": False}
    resp = session.revoke_token(meta["revocation_endpoint"], token="never-issued")
    assert resp.status_code == 200                                  # RFC 7009 2.2
