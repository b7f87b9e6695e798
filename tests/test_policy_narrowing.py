"""Narrowing a requester's policy narrows its live consents at the next call — not only their
items, but their kind (once/ongoing) and their length (max_duration): a consent the policy no
longer allows stops releasing and stops refreshing."""
from __future__ import annotations

import copy

from sqlalchemy import update

from gateway import requester_registry
from gateway.store.db import requesters

PURPOSE = "ekyc-account-opening"


def _narrow(flow, change):
    with flow.gw.transaction() as conn:
        policy = copy.deepcopy(requester_registry.get(conn, flow.client_id)["policy"])
        change(policy["purposes"][PURPOSE])
        conn.execute(update(requesters).where(requesters.c.client_id == flow.client_id)
                     .values(policy=policy))


def _refresh(flow, refresh_token):
    return flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, **flow.auth()})


def _introspect(flow, token):
    return flow.requester.post("/oauth/introspect", data={"token": token, **flow.auth()}).get_json()


def test_withdrawing_ongoing_access_stops_an_ongoing_consent(flow):
    tokens = flow.tokens()
    assert flow.data(tokens["access_token"]).status_code == 200
    _narrow(flow, lambda p: p.update(access=["once"]))
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 401 and "ongoing" in resp.get_json()["detail"]
    refreshed = _refresh(flow, tokens["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    assert _introspect(flow, tokens["access_token"]) == {"active": False}


def test_shortening_max_duration_ends_a_consent_that_has_run_longer(flow, clock):
    tokens = flow.tokens()                     # asked for P90D under a P1Y policy
    clock.advance(120)
    _narrow(flow, lambda p: p.update(max_duration="PT1M"))
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 401 and "max_duration" in resp.get_json()["detail"]
    assert _refresh(flow, tokens["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_a_shorter_max_duration_not_yet_reached_leaves_the_consent_working(flow, clock):
    tokens = flow.tokens()
    _narrow(flow, lambda p: p.update(max_duration="P30D"))
    assert flow.data(tokens["access_token"]).status_code == 200
    clock.advance(60)
    assert _refresh(flow, tokens["refresh_token"]).status_code == 200
