"""POST /oauth/par: only well-formed requests within the requester's policy are stored."""
from __future__ import annotations

import json

import pytest

from .flow import BANK_DETAIL, ledger_snapshot


def test_pushed_request_answers_request_uri_and_lifetime(flow):
    resp = flow.par()
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert 60 <= body["expires_in"] <= 600
    assert resp.headers["Cache-Control"] == "no-store"


BAD_DETAILS = {
    "unknown type": [{**BANK_DETAIL, "type": "payment_initiation"}],
    "unknown field": [{**BANK_DETAIL, "status": "approved"}],
    "wrong type of items": [{**BANK_DETAIL, "data_items": "identity.hkid"}],
    "empty list": [],
    "not a list": {"type": "cdeg_data"},
    "thousands of entries": [BANK_DETAIL] * 2000,
    "deep nesting": "DEEP",
    "ongoing without duration": [{k: v for k, v in BANK_DETAIL.items() if k != "duration"}],
    "bad duration": [{**BANK_DETAIL, "duration": "90 days"}],
    "access kind unknown": [{**BANK_DETAIL, "access": "forever"}],
    "item repeated": [{**BANK_DETAIL, "data_items": ["identity.hkid", "identity.hkid"]}],
    "not json": "NOTJSON",
}


@pytest.mark.parametrize("case", sorted(BAD_DETAILS))
def test_malformed_authorization_details_are_refused_and_nothing_is_stored(flow, case):
    value = BAD_DETAILS[case]
    raw = {"DEEP": "[" * 10000 + "]" * 10000, "NOTJSON": "[{"}.get(value) if isinstance(value, str) \
        else json.dumps(value)
    before = ledger_snapshot(flow.gw)
    resp = flow.requester.post("/oauth/par", data=flow.par_form(authorization_details=raw))
    assert resp.status_code in (400, 413), resp.get_json()  # 413: bigger than any body allowed
    assert resp.get_json()["error"] in ("invalid_authorization_details", "invalid_request")
    assert ledger_snapshot(flow.gw) == before


@pytest.mark.parametrize("detail, named", [
    ({**BANK_DETAIL, "purpose": "marketing"}, "marketing"),
    ({**BANK_DETAIL, "data_items": BANK_DETAIL["data_items"] + ["identity.sex"]}, "identity.sex"),
    ({**BANK_DETAIL, "data_items": BANK_DETAIL["data_items"] + ["health.blood_type"]},
     "health.blood_type"),
    ({**BANK_DETAIL, "data_items": ["identity.name_en"]}, "identity.hkid"),
    ({**BANK_DETAIL, "duration": "P2Y"}, "max_duration"),
])
def test_request_outside_policy_is_refused_naming_the_item_or_purpose(flow, detail, named):
    before = ledger_snapshot(flow.gw)
    resp = flow.par(detail)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_authorization_details"
    assert named in body["error_description"]
    assert ledger_snapshot(flow.gw) == before


@pytest.mark.parametrize("changes, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
    ({"redirect_uri": "http://127.0.0.1:9100/callback/../x"}, "invalid_request"),
    ({"request_uri": "urn:ietf:params:oauth:request_uri:abc"}, "invalid_request"),
    ({"client_id": "transport-department"}, "invalid_client"),
    ({"response_mode": "form_post"}, "invalid_request"),
])
def test_bad_pushed_request_parameters_are_refused(flow, changes, error):
    before = ledger_snapshot(flow.gw)
    resp = flow.par(**changes)
    assert resp.status_code in (400, 401)
    assert resp.get_json()["error"] == error
    assert ledger_snapshot(flow.gw) == before


def test_parameters_the_gateway_does_not_know_are_ignored_as_rfc_6749_requires(flow):
    """RFC 6749 3.1: unrecognised request parameters MUST be ignored — a bank's OAuth library
    may add resource (RFC 8707), nonce, scope or a parameter of its own."""
    resp = flow.par(resource="https://gateway.test/api", nonce="n-1", scope="openid",
                    unexpected="field", prompt="login")
    assert resp.status_code == 201, resp.get_json()
    consent = flow.decide(resp.get_json()["request_uri"]) if flow.login() else None
    assert consent is not None and consent.status_code == 303


def test_par_needs_a_form_body(flow):
    resp = flow.requester.post("/oauth/par", json=flow.par_form())
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


def test_repeated_parameter_is_refused(flow):
    from urllib.parse import urlencode
    form = list(flow.par_form().items()) + [("state", "again")]
    resp = flow.requester.post("/oauth/par", data=urlencode(form),
                               content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400 and "repeated" in resp.get_json()["error_description"]


def test_oversized_body_is_refused_without_a_500(flow):
    resp = flow.requester.post("/oauth/par", data=flow.par_form(state="x" * 200_000))
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "invalid_request"
