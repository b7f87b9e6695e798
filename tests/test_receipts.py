"""Consent receipts (SPEC 4 and 6, ISO/IEC TS 27560 in shape) and the notice the citizen saw:
the requester gets the receipt from GET /api/v1/consents/<id>, the citizen downloads it from
/me; anyone verifies it with /jwks.json; the notice's digest is in the consent, its tokens and
its receipt."""
from __future__ import annotations

import json

import jwt as pyjwt
import pytest
from jwcrypto import jwk, jws

from gateway.consent import citizen_view
from tests.flow import Flow, TD


def verified(flow, token: str, typ: str) -> dict:
    """Checked as an outside party would: PyJWT and the gateway's /jwks.json."""
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == typ and header["alg"] == "ES256"
    keys = jwk.JWKSet.from_json(flow.requester.get("/jwks.json").get_data(as_text=True))
    public = pyjwt.PyJWK(json.loads(keys.get_key(header["kid"]).export_public())).key
    return pyjwt.decode(token, public, algorithms=["ES256"], audience="bank-of-example",
                        issuer=flow.issuer)


def consent_view(flow, tokens):
    return flow.requester.get(f"/api/v1/consents/{tokens['consent_id']}",
                              headers={"Authorization": f"Bearer {tokens['access_token']}"})


def test_the_requester_gets_its_consent_with_a_receipt_anyone_can_verify(flow):
    tokens = flow.tokens()
    resp = consent_view(flow, tokens)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    assert body["consent_id"] == tokens["consent_id"] and body["status"] == "approved"
    assert body["purpose"] == "ekyc-account-opening" and body["expires_at"].endswith("Z")
    receipt = verified(flow, body["receipt"], "cdeg-consent-receipt+jwt")
    assert receipt["schema"] == "ISO/IEC TS 27560:2023" and receipt["jurisdiction"] == "HK"
    assert receipt["consent_id"] == tokens["consent_id"] and receipt["state"] == "active"
    assert receipt["controller"]["id"] == "bank-of-example"
    assert receipt["processing"]["legal_basis"] == "consent"
    assert receipt["processing"]["retention"] == "P7Y"
    assert receipt["processing"]["data_items"] == body["data_items"]
    assert receipt["decided_at"] and receipt["expires_at"] and receipt["jti"]
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert receipt["data_subject"] == claims["sub"]       # the pairwise subject, no HKID
    assert "A123456" not in json.dumps(receipt)


def test_the_notice_digest_is_bound_to_the_consent_its_token_and_its_receipt(flow):
    tokens = flow.tokens()
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    receipt = verified(flow, consent_view(flow, tokens).get_json()["receipt"],
                       "cdeg-consent-receipt+jwt")
    with flow.gw.db.connect() as conn:
        from gateway.consent import ledger
        consent = ledger.get(conn, tokens["consent_id"])
    shown = consent["notice"]
    assert shown["lang"] == "en" and shown["requester"]["name"] == "Bank of Example"
    assert [i["id"] for i in shown["items"]] == consent["data_items"]
    assert "value" not in json.dumps(shown)                  # the wording, never the values
    digest = citizen_view.notice_digest(shown)
    assert consent["notice_digest"] == claims["notice_digest"] == digest
    assert receipt["notice"]["digest"] == digest
    assert receipt["notice"]["template"].startswith("consent-screen@")


def test_the_notice_records_the_language_the_citizen_read_it_in(flow):
    flow.browser.get("/me?lang=zh-HK")
    tokens = flow.tokens()
    with flow.gw.db.connect() as conn:
        from gateway.consent import ledger
        shown = ledger.get(conn, tokens["consent_id"])["notice"]
    assert shown["lang"] == "zh-HK" and shown["requester"]["name"] == "示例銀行"
    assert shown["template"] != citizen_view.notice_version("en")


def test_a_revoked_consent_shows_withdrawn_to_its_requester(flow):
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    body = consent_view(flow, tokens).get_json()
    assert body["status"] == "revoked"
    receipt = verified(flow, body["receipt"], "cdeg-consent-receipt+jwt")
    assert receipt["state"] == "withdrawn" and receipt["ended_at"]


def test_another_requesters_token_or_another_consent_is_404(app, flow):
    mine = flow.tokens()
    other = Flow(app, TD).tokens({"type": "cdeg_data", "purpose": "vehicle-licence-renewal",
                                  "access": "once", "data_items": [
                                      "identity.name_en", "identity.hkid", "address.residential"]})
    for token, consent_id in ((other["access_token"], mine["consent_id"]),
                              (mine["access_token"], other["consent_id"]),
                              (mine["access_token"], "cns_does_not_exist")):
        resp = flow.requester.get(f"/api/v1/consents/{consent_id}",
                                  headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    resp = flow.requester.get(f"/api/v1/consents/{mine['consent_id']}")
    assert resp.status_code == 401 and "Bearer" in resp.headers["WWW-Authenticate"]


def test_the_citizen_downloads_the_same_receipt_from_me(flow):
    tokens = flow.tokens()
    page = flow.browser.get("/me").get_data(as_text=True)
    link = f"/me/consents/{tokens['consent_id']}/receipt"
    assert link in page
    resp = flow.browser.get(link)
    assert resp.status_code == 200 and resp.mimetype == "application/jwt"
    assert "attachment" in resp.headers["Content-Disposition"]
    mine = verified(flow, resp.get_data(as_text=True), "cdeg-consent-receipt+jwt")
    theirs = verified(flow, consent_view(flow, tokens).get_json()["receipt"],
                      "cdeg-consent-receipt+jwt")
    drop = ("iat", "jti")
    assert {k: v for k, v in mine.items() if k not in drop} == \
        {k: v for k, v in theirs.items() if k not in drop}


def test_another_citizens_receipt_is_not_found(app, flow):
    tokens = flow.tokens()
    stranger = Flow(app)
    stranger.login("G123456(A)")
    resp = stranger.browser.get(f"/me/consents/{tokens['consent_id']}/receipt")
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"


def test_a_token_revoked_on_its_own_no_longer_reads_its_consent(flow):
    tokens = flow.tokens()
    resp = flow.requester.post("/oauth/revoke", data={"token": tokens["access_token"],
                                                      **flow.auth()})
    assert resp.status_code == 200
    assert consent_view(flow, tokens).status_code == 401
