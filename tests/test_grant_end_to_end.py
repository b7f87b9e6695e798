"""The whole path on both backends: consent → token → data → revoke → refused."""
from __future__ import annotations

from .flow import BANK_DETAIL, HKID


def test_citizen_approves_and_requester_reads_minimised_data(flow):
    tokens = flow.tokens()
    assert tokens["token_type"] == "Bearer"
    assert tokens["authorization_details"] == [BANK_DETAIL]
    assert "refresh_token" in tokens  # ongoing consent
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["consent_id"] == tokens["consent_id"]
    assert set(body["items"]) == set(BANK_DETAIL["data_items"])
    assert body["items"]["identity.hkid"] == {"value": HKID, "source": "immd", "verified": True,
                                              "as_of": body["items"]["identity.hkid"]["as_of"]}
    assert body["items"]["address.residential"]["value"]["district"] == "Sham Shui Po"
    assert "contact.mobile" not in body["items"]


def test_revoked_consent_stops_data_at_once(flow):
    tokens = flow.tokens()
    assert flow.data(tokens["access_token"]).status_code == 200
    assert flow.revoke_as_citizen(tokens["consent_id"]).status_code == 303
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert resp.mimetype == "application/problem+json"


def test_declined_request_redirects_with_access_denied_and_iss(flow):
    resp = flow.par()
    flow.login()
    answer = flow.decide(resp.get_json()["request_uri"], "decline")
    assert answer.status_code == 303
    assert flow.query(answer) == {"error": "access_denied", "state": "st-123",
                                  "iss": flow.issuer}


def test_approval_redirect_carries_code_state_and_iss(flow):
    resp = flow.par()
    flow.login()
    answer = flow.decide(resp.get_json()["request_uri"])
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(flow.redirect_uri + "?")
    query = flow.query(answer)
    assert query["state"] == "st-123" and query["iss"] == flow.issuer and query["code"]


def test_data_subset_within_consent_is_answered(flow):
    tokens = flow.tokens()
    body = flow.data(tokens["access_token"], items="identity.name_en").get_json()
    assert list(body["items"]) == ["identity.name_en"]
    assert body["items"]["identity.name_en"]["value"] == "CHAN, Tai Man"
