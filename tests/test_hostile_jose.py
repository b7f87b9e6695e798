"""Malformed JOSE from anyone: always a 401/400 in the endpoint's error shape, never a 500 —
deeply nested JSON in a header or payload, numbers too large for an integer, and an audience
array that names someone else beside the gateway. Every token here is correctly signed by the
right key under the right kid (hand-built where the header or payload is not JSON a library
would write), so the fault named is the only thing wrong with it."""
from __future__ import annotations

import base64
import json
import time

import pytest
from jwcrypto import jws

from gateway.demo.agent import ASSERTION_TYPE

from .forge import raw_signed
from .flow import ledger_snapshot

NESTED = "[" * 2000 + "]" * 2000


def _header(kid: str, typ: str = "JWT") -> str:
    return json.dumps({"alg": "ES256", "kid": kid, "typ": typ})


def _sign_raw(key, header: str, payload: str) -> str:
    """Sign payload text exactly as given (json.dumps cannot write 1e400)."""
    token = jws.JWS(payload.encode())
    token.add_signature(key, alg="ES256", protected=header)
    return token.serialize(compact=True)


def _assertion_claims(flow, **raw) -> str:
    now = int(time.time())
    claims = {"iss": flow.client_id, "sub": flow.client_id, "aud": flow.issuer, "iat": now,
              "exp": now + 60, "jti": f"j-{time.time_ns()}"}
    text = json.dumps(claims)
    for name, literal in raw.items():  # replace a claim's value with raw JSON text
        text = text.replace(json.dumps(name) + ": " + json.dumps(claims.get(name)),
                            json.dumps(name) + ": " + literal)
    return text


def _oauth_call(flow, endpoint: str, assertion: str):
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
            "client_id": flow.client_id}
    if endpoint == "/oauth/par":
        form = flow.par_form(client_assertion=assertion)
    elif endpoint == "/oauth/token":
        form.update(grant_type="authorization_code", code="x", redirect_uri=flow.redirect_uri,
                    code_verifier="v" * 43)
    else:
        form["token"] = "whatever"
    return flow.requester.post(endpoint, data=form)


OAUTH_ENDPOINTS = ["/oauth/par", "/oauth/token", "/oauth/revoke", "/oauth/introspect"]


def _assert_invalid_client(flow, resp, before):
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "invalid_client"
    assert ledger_snapshot(flow.gw) == before


@pytest.mark.parametrize("endpoint", OAUTH_ENDPOINTS)
@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_client_assertion_is_invalid_client_not_500(flow, endpoint, part):
    header = NESTED if part == "header" else _header(flow.key.get("kid"))
    payload = NESTED if part == "payload" else _assertion_claims(flow)
    token = raw_signed(flow.key, header, payload, alg="ES256")
    before = ledger_snapshot(flow.gw)
    _assert_invalid_client(flow, _oauth_call(flow, endpoint, token), before)


@pytest.mark.parametrize("endpoint", OAUTH_ENDPOINTS)
def test_deeply_nested_header_inside_the_protected_header_field_is_refused(flow, endpoint):
    kid = flow.key.get("kid")
    header = json.dumps({"alg": "ES256", "kid": kid, "x": json.loads("[" * 500 + "]" * 500)})
    header = header.replace("[" * 500, NESTED[:2000]).replace("]" * 500, NESTED[2000:])
    token = raw_signed(flow.key, header, _assertion_claims(flow), alg="ES256")
    before = ledger_snapshot(flow.gw)
    _assert_invalid_client(flow, _oauth_call(flow, endpoint, token), before)


@pytest.mark.parametrize("part", ["header", "payload"])
def test_client_assertion_whose_header_or_payload_is_json_but_no_object_is_invalid_client(
        flow, part):
    header = '["ES256"]' if part == "header" else _header(flow.key.get("kid"))
    payload = '["claims"]' if part == "payload" else _assertion_claims(flow)
    token = raw_signed(flow.key, header, payload, alg="ES256")
    for endpoint in OAUTH_ENDPOINTS:
        before = ledger_snapshot(flow.gw)
        _assert_invalid_client(flow, _oauth_call(flow, endpoint, token), before)


@pytest.mark.parametrize("part", ["header", "payload"])
def test_bearer_token_whose_header_or_payload_is_json_but_no_object_is_401(flow, part):
    key = flow.gw.keyring.signing_key
    header = '["ES256"]' if part == "header" else _header(key.get("kid"), "at+jwt")
    payload = '["claims"]' if part == "payload" else "{}"
    resp = flow.data(raw_signed(key, header, payload, alg="ES256"))
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_huge_number_in_a_validly_signed_client_assertion_is_invalid_client(flow, claim):
    payload = _assertion_claims(flow, **{claim: "1e400"})
    if claim == "nbf":
        payload = payload[:-1] + ', "nbf": 1e400}'
    assertion = _sign_raw(flow.key, _header(flow.key.get("kid")), payload)
    before = ledger_snapshot(flow.gw)
    _assert_invalid_client(flow, _oauth_call(flow, "/oauth/par", assertion), before)


@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_bearer_token_is_401_not_500(flow, part):
    key = flow.gw.keyring.signing_key
    header = NESTED if part == "header" else _header(key.get("kid"), "at+jwt")
    payload = NESTED if part == "payload" else "{}"
    resp = flow.data(raw_signed(key, header, payload, alg="ES256"))
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_bearer_token_signed_by_the_gateway_with_a_huge_exp_is_401(flow):
    tokens = flow.tokens()
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    text = json.dumps(claims).replace(json.dumps("exp") + ": " + str(claims["exp"]),
                                      json.dumps("exp") + ": 1e400")
    assert "1e400" in text
    token = _sign_raw(flow.gw.keyring.signing_key, _header(flow.gw.keyring.signing_key.get("kid"),
                                                           "at+jwt"), text)
    resp = flow.data(token)
    assert resp.status_code == 401, resp.get_data(as_text=True)


def test_client_assertion_whose_aud_array_names_another_audience_too_is_refused(flow):
    payload = _assertion_claims(flow, aud=json.dumps([flow.issuer, "https://other.example"]))
    assertion = _sign_raw(flow.key, _header(flow.key.get("kid")), payload)
    before = ledger_snapshot(flow.gw)
    resp = _oauth_call(flow, "/oauth/par", assertion)
    _assert_invalid_client(flow, resp, before)
    assert "aud" in resp.get_json()["error_description"]


def test_client_assertion_with_the_issuer_as_its_only_audience_in_an_array_is_accepted(flow):
    payload = _assertion_claims(flow, aud=json.dumps([flow.issuer]))
    assertion = _sign_raw(flow.key, _header(flow.key.get("kid")), payload)
    resp = _oauth_call(flow, "/oauth/par", assertion)
    assert resp.status_code == 201, resp.get_json()


def test_client_assertion_with_a_lone_surrogate_in_its_jti_is_invalid_client(flow):
    """JSON can escape a lone surrogate that no UTF-8 key or column can hold."""
    payload = _assertion_claims(flow, jti='"\\ud800x"')
    assert '\\ud800' in payload
    assertion = _sign_raw(flow.key, _header(flow.key.get("kid")), payload)
    for endpoint in OAUTH_ENDPOINTS:
        before = ledger_snapshot(flow.gw)
        _assert_invalid_client(flow, _oauth_call(flow, endpoint, assertion), before)


def test_an_unknown_field_named_with_a_lone_surrogate_is_a_plain_ascii_error(flow):
    detail = json.dumps([{"type": "cdeg_data", "purpose": "ekyc-account-opening",
                          "access": "once", "data_items": ["identity.name_en"]}])
    detail = detail[:-2] + ', "\\ud800": 1}]'
    before = ledger_snapshot(flow.gw)
    resp = flow.par(authorization_details=detail)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"] == "invalid_authorization_details"
    assert body["error_description"].isascii() and '"' not in body["error_description"]
    assert ledger_snapshot(flow.gw) == before


def test_bearer_token_signed_by_the_gateway_with_a_lone_surrogate_jti_is_401(flow):
    tokens = flow.tokens()
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    text = json.dumps(claims).replace(json.dumps(claims["jti"]), '"\\ud800x"')
    key = flow.gw.keyring.signing_key
    resp = flow.data(_sign_raw(key, _header(key.get("kid"), "at+jwt"), text))
    assert resp.status_code == 401, resp.get_data(as_text=True)
