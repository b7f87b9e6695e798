"""private_key_jwt: every way an assertion can be wrong is refused with invalid_client."""
from __future__ import annotations

import base64
import json
import time

import pytest
from jwcrypto import jwk

from gateway.demo.agent import ASSERTION_TYPE, client_assertion

from .forge import DANGEROUS_HEADERS, b64json, dangerous_headers, raw_signed, signed
from .flow import key_of, ledger_snapshot


def _claims(flow, **changes) -> dict:
    now = flow.gw.clock.now()
    claims = {"iss": flow.client_id, "sub": flow.client_id, "aud": flow.issuer, "iat": now,
              "exp": now + 60, "jti": f"j-{time.time_ns()}"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _header(flow, **changes) -> dict:
    header = {"alg": "ES256", "kid": flow.key.get("kid"), "typ": "JWT", **changes}
    return {k: v for k, v in header.items() if v is not None}


def _par_with(flow, assertion: str):
    return flow.requester.post("/oauth/par", data=flow.par_form(
        client_assertion=assertion, client_assertion_type=ASSERTION_TYPE))


def _refused(flow, assertion: str, reason: str | None = None):
    """401 invalid_client, nothing stored; ``reason``: the error_description names the fault
    (so the test fails when a later check refuses the token for something else)."""
    before = ledger_snapshot(flow.gw)
    resp = _par_with(flow, assertion)
    assert resp.status_code == 401, resp.get_json()
    assert resp.get_json()["error"] == "invalid_client"
    if reason is not None:
        assert reason in resp.get_json()["error_description"], resp.get_json()
    assert ledger_snapshot(flow.gw) == before
    return resp


OAUTH_ENDPOINTS = ["/oauth/par", "/oauth/token", "/oauth/revoke", "/oauth/introspect"]


def _call(flow, endpoint: str, assertion: str, client_id: str | None = None):
    """An otherwise well-formed request to one of the endpoints that authenticate clients."""
    auth = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
            "client_id": client_id or flow.client_id}
    if endpoint == "/oauth/par":
        return flow.requester.post(endpoint, data=flow.par_form(**auth))
    form = {"token": "whatever"} if endpoint != "/oauth/token" else {
        "grant_type": "authorization_code", "code": "x", "redirect_uri": flow.redirect_uri,
        "code_verifier": "v" * 43}
    return flow.requester.post(endpoint, data={**form, **auth})


def _refused_everywhere(flow, make_assertion, reason: str, client_id: str | None = None):
    """Each endpoint gets its own assertion (a fresh jti): were one accepted, the next endpoint
    must not be refused merely as a replay."""
    for endpoint in OAUTH_ENDPOINTS:
        before = ledger_snapshot(flow.gw)
        resp = _call(flow, endpoint, make_assertion(), client_id)
        assert resp.status_code == 401, (endpoint, resp.get_json())
        assert resp.get_json()["error"] == "invalid_client"
        assert reason in resp.get_json()["error_description"], (endpoint, resp.get_json())
        assert ledger_snapshot(flow.gw) == before


def test_valid_assertion_is_accepted(flow):
    assert _par_with(flow, flow.assertion()).status_code == 201


def test_hand_signed_assertion_is_accepted(flow):
    """The control for every hand-built refusal below: the same builder, nothing wrong."""
    assert _par_with(flow, raw_signed(flow.key, _header(flow), _claims(flow))).status_code == 201


def test_token_endpoint_url_is_accepted_as_audience(flow):
    assert _par_with(flow, flow.assertion(aud=flow.issuer + "/oauth/token")).status_code == 201


# Each fault alone, on an assertion correctly signed by the client's registered key; the
# values are taken from the gateway's clock when the test runs.
CLAIM_FAULTS = {
    "foreign aud": (lambda now: {"aud": "https://other-gateway.example"}, "wrong value"),
    "no aud": (lambda now: {"aud": None}, "aud is missing"),
    "sub not client": (lambda now: {"sub": "transport-department"}, "sub must equal client_id"),
    "no sub": (lambda now: {"sub": None}, "sub is missing"),
    # no leeway on exp (jwcrypto alone would allow 60 s)
    "expired 30 s ago": (lambda now: {"exp": now - 30}, "expired"),
    "expired long ago": (lambda now: {"exp": now - 3600}, "expired"),
    "exp too far": (lambda now: {"exp": now + 3600}, "more than 5 minutes ahead"),
    "no exp": (lambda now: {"exp": None}, "exp is missing"),
    # jwcrypto itself cannot compare a string exp with the time: refused as invalid claims
    "exp string": (lambda now: {"exp": str(now + 60)}, "claims invalid"),
    "exp fraction": (lambda now: {"exp": now + 60.5}, "exp must be a number"),
    "iat future": (lambda now: {"iat": now + 600}, "iat is in the future"),
    "iat string": (lambda now: {"iat": str(now)}, "iat must be a number"),
    "nbf future": (lambda now: {"nbf": now + 600}, "nbf is in the future"),
    "nbf string": (lambda now: {"nbf": str(now)}, "nbf must be a number"),
    "no jti": (lambda now: {"jti": None}, "jti is missing"),
    "empty jti": (lambda now: {"jti": ""}, "jti missing or too long"),
    "jti too long": (lambda now: {"jti": "j" * 201}, "jti missing or too long"),
}


@pytest.mark.parametrize("fault", list(CLAIM_FAULTS))
def test_bad_assertion_claims_are_refused(flow, fault):
    changes, reason = CLAIM_FAULTS[fault]
    claims = _claims(flow, **changes(flow.gw.clock.now()))
    _refused(flow, signed(flow.key, claims, _header(flow)), reason)


def test_jti_of_two_hundred_characters_is_accepted(flow):
    """The edge of "jti too long" above."""
    assert _par_with(flow, signed(flow.key, _claims(flow, jti="j" * 200),
                                  _header(flow))).status_code == 201


def test_replayed_assertion_is_refused(flow):
    assertion = flow.assertion()
    assert _par_with(flow, assertion).status_code == 201
    _refused(flow, assertion, "jti was already used")


def test_another_clients_valid_assertion_under_my_client_id_is_refused(flow):
    td = key_of("transport-department")
    assertion = client_assertion(td, "transport-department", flow.issuer)
    _refused(flow, assertion, "client_id does not match")  # the PAR form names the bank


def test_alg_none_is_refused(flow):
    token = b64json(_header(flow, alg="none")) + "." + b64json(_claims(flow)) + "."
    _refused(flow, token, "alg not accepted")


def test_hs256_signed_with_the_public_key_is_refused(flow):
    public = json.dumps(flow.key.export_public(as_dict=True)).encode()
    mac_key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public).decode().rstrip("="))
    _refused(flow, signed(mac_key, _claims(flow), _header(flow, alg="HS256")),
             "alg not accepted")


def _rsa_client(flow) -> jwk.JWK:
    """A requester whose registered key is RSA (allowed for PS256)."""
    from gateway import requester_registry
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-bank-1")
    with flow.gw.transaction() as conn:
        requester_registry.register(conn, flow.gw.clock.now(), client_id="rsa-bank",
                                    name="RSA Bank", kind="department",
                                    jwks={"keys": [key.export_public(as_dict=True)]},
                                    redirect_uris=["https://rsa-bank.example/cb"])
    return key


def _rsa_assertion(flow, key, alg: str) -> str:
    return raw_signed(key, {"alg": alg, "kid": key.get("kid"), "typ": "JWT"},
                      _claims(flow, iss="rsa-bank", sub="rsa-bank"))


def test_ps256_by_a_registered_rsa_key_is_accepted(flow):
    """The control for the next test: same client, same key, the allowed algorithm."""
    key = _rsa_client(flow)
    resp = _call(flow, "/oauth/revoke", _rsa_assertion(flow, key, "PS256"), client_id="rsa-bank")
    assert resp.status_code == 200, resp.get_json()


def test_rs256_is_refused_even_when_signed_by_the_clients_registered_rsa_key(flow):
    key = _rsa_client(flow)
    _refused_everywhere(flow, lambda: _rsa_assertion(flow, key, "RS256"), "alg not accepted",
                        client_id="rsa-bank")


def test_signature_by_another_key_is_refused(flow):
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid=flow.key.get("kid"))
    _refused(flow, client_assertion(stranger, flow.client_id, flow.issuer),
             "signature or claims invalid")


def test_unknown_kid_is_refused(flow):
    _refused(flow, signed(flow.key, _claims(flow), _header(flow, kid="../../etc/passwd")),
             "kid is not in the client's registered JWKS")


# Each header alone, on an assertion correctly signed by the client's own key under its kid:
# only the header guard stands between it and acceptance (jwk: the two tests after this one).
@pytest.mark.parametrize("name", [n for n in DANGEROUS_HEADERS if n != "jwk"])
def test_dangerous_header_on_a_properly_signed_assertion_is_refused(flow, name):
    extra = dangerous_headers({})[name]
    _refused_everywhere(flow, lambda: raw_signed(flow.key, _header(flow, **extra), _claims(flow)),
                        f"header {name.split()[0]} not accepted")


def test_embedded_jwk_header_is_refused_even_when_properly_signed(flow):
    """The client's own public key embedded, its own kid, its own signature."""
    header = _header(flow, jwk=flow.key.export_public(as_dict=True))
    _refused_everywhere(flow, lambda: raw_signed(flow.key, header, _claims(flow)),
                        "header jwk not accepted")


def test_embedded_attacker_jwk_is_refused_for_the_header_before_any_signature_check(flow):
    """An attacker's key embedded under the client's kid, signed by the attacker: refused for
    the jwk header itself, not merely because the signature does not match the registered key."""
    attacker = jwk.JWK.generate(kty="EC", crv="P-256", kid=flow.key.get("kid"))
    header = _header(flow, jwk=attacker.export_public(as_dict=True))
    _refused_everywhere(flow, lambda: raw_signed(attacker, header, _claims(flow)),
                        "header jwk not accepted")


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
