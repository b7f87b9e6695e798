"""private_key_jwt: every way an assertion can be wrong is refused with invalid_client."""
from __future__ import annotations

import base64
import json
import time

import pytest
from jwcrypto import jwk

from gateway.demo.agent import ASSERTION_TYPE, client_assertion

from .forge import b64json, signed
from .flow import key_of, ledger_snapshot



def _claims(flow, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": flow.client_id, "sub": flow.client_id, "aud": flow.issuer, "iat": now,
              "exp": now + 60, "jti": f"j-{time.time_ns()}"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}



def _par_with(flow, assertion: str):
    return flow.requester.post("/oauth/par", data=flow.par_form(
        client_assertion=assertion, client_assertion_type=ASSERTION_TYPE))


def _refused(flow, assertion: str):
    before = ledger_snapshot(flow.gw)
    resp = _par_with(flow, assertion)
    assert resp.status_code == 401, resp.get_json()
    assert resp.get_json()["error"] == "invalid_client"
    assert ledger_snapshot(flow.gw) == before
    return resp


def test_valid_assertion_is_accepted(flow):
    assert _par_with(flow, flow.assertion()).status_code == 201


def test_token_endpoint_url_is_accepted_as_audience(flow):
    assert _par_with(flow, flow.assertion(aud=flow.issuer + "/oauth/token")).status_code == 201


@pytest.mark.parametrize("changes", [
    {"aud": "https://other-gateway.example"},
    {"aud": None},
    {"sub": "transport-department"},
    {"exp": int(time.time()) - 120},
    {"exp": int(time.time()) + 3600},
    {"exp": None},
    {"exp": "9999999999"},
    {"iat": int(time.time()) + 600},
    {"jti": None},
], ids=["foreign aud", "no aud", "sub not client", "expired", "exp too far", "no exp",
        "exp string", "iat future", "no jti"])
def test_bad_assertion_claims_are_refused(flow, changes):
    header = {"alg": "ES256", "kid": flow.key.get("kid")}
    _refused(flow, signed(flow.key, _claims(flow, **changes), header))


def test_replayed_assertion_is_refused(flow):
    assertion = flow.assertion()
    assert _par_with(flow, assertion).status_code == 201
    _refused(flow, assertion)


def test_alg_none_is_refused(flow):
    token = b64json({"alg": "none", "kid": flow.key.get("kid")}) + "." + b64json(_claims(flow)) + "."
    _refused(flow, token)


def test_hs256_signed_with_the_public_key_is_refused(flow):
    public = json.dumps(flow.key.export_public(as_dict=True)).encode()
    mac_key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public).decode().rstrip("="))
    _refused(flow, signed(mac_key, _claims(flow), {"alg": "HS256", "kid": flow.key.get("kid")}))


def test_rs256_is_refused_even_with_a_registered_looking_key(flow):
    rsa = jwk.JWK.generate(kty="RSA", size=2048, kid=flow.key.get("kid"))
    _refused(flow, signed(rsa, _claims(flow), {"alg": "RS256", "kid": flow.key.get("kid")}))


def test_signature_by_another_key_is_refused(flow):
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid=flow.key.get("kid"))
    _refused(flow, client_assertion(stranger, flow.client_id, flow.issuer))


def test_unknown_kid_is_refused(flow):
    _refused(flow, signed(flow.key, _claims(flow), {"alg": "ES256", "kid": "../../etc/passwd"}))


@pytest.mark.parametrize("extra", [{"jku": "https://evil.example/jwks"},
                                   {"x5u": "https://evil.example/cert"},
                                   {"crit": ["exp"], "exp": 1}, {"zip": "DEF"}])
def test_dangerous_headers_are_refused(flow, extra):
    header = {"alg": "ES256", "kid": flow.key.get("kid"), **extra}
    token = b64json(header) + "." + b64json(_claims(flow)) + ".c2ln"
    _refused(flow, token)


def test_embedded_jwk_header_is_refused(flow):
    attacker = jwk.JWK.generate(kty="EC", crv="P-256", kid=flow.key.get("kid"))
    header = {"alg": "ES256", "kid": flow.key.get("kid"),
              "jwk": attacker.export_public(as_dict=True)}
    _refused(flow, signed(attacker, _claims(flow), header))


def test_assertion_of_unknown_client_is_refused(flow):
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid="k1")
    resp = flow.requester.post("/oauth/par", data=flow.par_form(
        client_id="nobody", client_assertion=client_assertion(stranger, "nobody", flow.issuer)))
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "a.b.c.d.e", "x" * 8000,
                                     "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.sig"],
                         ids=["empty", "word", "two parts", "five parts", "huge", "bad payload"])
def test_garbage_assertions_are_refused_without_a_500(flow, garbage):
    _refused(flow, garbage)


def test_wrong_assertion_type_is_refused(flow):
    resp = flow.requester.post("/oauth/par", data=flow.par_form(client_assertion_type="basic"))
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"


def test_other_clients_key_cannot_sign_for_this_client(flow):
    other = key_of("transport-department")
    _refused(flow, client_assertion(other, flow.client_id, flow.issuer))


def test_the_called_endpoint_url_is_accepted_as_audience(flow):
    """RFC 9126 section 2: a PAR client assertion may name the PAR endpoint."""
    assert _par_with(flow, flow.assertion(aud=flow.issuer + "/oauth/par")).status_code == 201


def test_another_endpoint_url_is_not_an_audience(flow):
    _refused(flow, flow.assertion(aud=flow.issuer + "/oauth/introspect"))


def test_weak_or_unsuitable_client_keys_cannot_be_registered(flow):
    from gateway import requester_registry
    weak = jwk.JWK.generate(kty="RSA", size=1024, kid="weak")
    p384 = jwk.JWK.generate(kty="EC", crv="P-384", kid="p384")
    for key, why in ((weak, "2048"), (p384, "P-256")):
        with flow.gw.transaction() as conn, pytest.raises(requester_registry.RequesterError, match=why):
            requester_registry.register(conn, 0, client_id="weak-bank", name="Weak", kind="fi",
                               jwks={"keys": [key.export_public(as_dict=True)]},
                               redirect_uris=["https://weak.example/cb"])


def test_alg_in_the_refusal_is_not_echoed_into_headers(flow):
    tokens = flow.tokens()
    header = {"alg": 'x"y中', "typ": "at+jwt", "kid": flow.gw.keyring.signing_key.get("kid")}
    token = b64json(header) + "." + tokens["access_token"].split(".")[1] + ".c2ln"
    resp = flow.data(token)
    assert resp.status_code == 401
    assert '"y' not in resp.headers["WWW-Authenticate"]
