"""The CDI bridge (SPEC 5): an FI submits a signed query carrying the access token of a consent
it holds; a job releases the data through the same steps as the data API (route ``cdi``), seals
it (a JWS by the gateway inside a JWE to the FI's key); the FI polls for it."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from gateway.store.db import audit_entries, cdi_queries
from tests.cdi_fi import FIClient
from tests.flow import BANK_DETAIL

ITEMS = ["identity.name_en", "identity.hkid"]


def released(gw, route="cdi") -> int:
    with gw.db.connect() as conn:
        rows = conn.execute(select(audit_entries.c.entry)
                            .where(audit_entries.c.event == "data.released")).scalars().all()
    return sum(1 for entry in rows if json.loads(entry)["route"] == route)


def queries_stored(gw) -> int:
    with gw.db.connect() as conn:
        return conn.execute(select(func.count()).select_from(cdi_queries)).scalar()


@pytest.fixture
def fi(flow):
    return FIClient(flow)


@pytest.fixture
def tokens(flow):
    return flow.tokens()


def test_fi_query_is_released_through_cdi_sealed_for_that_fi(flow, fi, tokens):
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="ekyc-0001"))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"query_id": "ekyc-0001", "status": "queued"}

    answer = fi.poll("ekyc-0001")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["status"] == "done" and "error" not in body
    header, claims = fi.open(body["result"])
    assert (header["alg"], header["enc"], header["cty"]) == ("ECDH-ES+A256KW", "A256GCM", "JWT")
    assert claims["iss"] == flow.issuer and claims["aud"] == "bank-of-example"
    assert claims["query_id"] == "ekyc-0001" and claims["consent_id"] == tokens["consent_id"]
    assert sorted(claims["items"]) == sorted(ITEMS)
    assert claims["items"]["identity.hkid"]["value"] == "A123456(3)"
    assert claims["items"]["identity.name_en"]["source"] == "immd"
    assert released(flow.gw) == 1


def test_the_same_query_id_returns_the_same_query_and_fetches_nothing_twice(flow, fi, tokens):
    first = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-same"))
    again = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-same"))
    assert first.status_code == again.status_code == 202
    assert again.get_json()["query_id"] == "q-same"
    assert again.get_json()["status"] in ("queued", "running", "done")
    assert queries_stored(flow.gw) == 1 and released(flow.gw) == 1


def test_a_query_id_reused_for_other_items_is_refused(flow, fi, tokens):
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-1")).status_code == 202
    resp = fi.submit(fi.message(tokens["access_token"], ["identity.hkid"], query_id="q-1"))
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["type"].endswith("/idempotency-key-reused")
    assert queries_stored(flow.gw) == 1


def test_a_message_replayed_whole_is_refused_409(flow, fi, tokens):
    message = fi.message(tokens["access_token"], ITEMS)
    assert fi.submit(message).status_code == 202
    resp = fi.submit(message)
    assert resp.status_code == 409
    assert resp.get_json()["type"].endswith("/message-replayed")
    assert queries_stored(flow.gw) == 1 and released(flow.gw) == 1


def test_items_outside_the_consent_are_refused_and_nothing_is_stored(flow, fi, tokens):
    resp = fi.submit(fi.message(tokens["access_token"], ["contact.mobile"]))
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/outside-consent")
    assert queries_stored(flow.gw) == 0


def test_a_revoked_consent_is_refused_at_submission(flow, fi, tokens):
    flow.revoke_as_citizen(tokens["consent_id"])
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS))
    assert resp.status_code == 401 and 'invalid_token' in resp.headers["WWW-Authenticate"]
    assert queries_stored(flow.gw) == 0
