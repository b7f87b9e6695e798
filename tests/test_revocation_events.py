"""Revocation pushed to the requester (SPEC 6, RFC 8417 + RFC 8935): a Security Event Token
signed by the gateway, POSTed to the requester's registered event endpoint by a worker, retried
with back-off; its state (notified, retrying, failed) shown to the citizen beside the revoked
consent. The revocation itself never waits for it."""
from __future__ import annotations

import json
import re

import pytest
from jwcrypto import jwk, jws

from gateway import requester_registry
from gateway.demo.seed import public_jwks
from gateway.jobs import events
from policies.engine import POLICY_DIR, load_file
from tests.test_cdi_callbacks import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def with_endpoint(flow, url):
    gw = flow.gw
    with gw.transaction() as conn:
        requester_registry.register(
            conn, gw.clock.now(), client_id="bank-of-example", name="Bank of Example",
            kind="fi", jwks=public_jwks("bank-of-example"), redirect_uris=[flow.redirect_uri],
            policy=load_file(POLICY_DIR / "bank-of-example.yaml"), demo=True, webhook_url=url)


def shown_state(flow, consent_id):
    page = flow.browser.get("/me").get_data(as_text=True)
    card = page[page.index(f'data-consent-id="{consent_id}"'):]
    card = card[:card.index("</section>")]
    found = re.search(r'data-event="([a-z]+)"', card)
    return found.group(1) if found else None


def test_a_revocation_is_pushed_to_the_requester_as_a_signed_security_event(flow, receiver):
    with_endpoint(flow, receiver.url("/events"))
    tokens = flow.tokens()
    assert shown_state(flow, tokens["consent_id"]) is None     # nothing to tell while active
    flow.revoke_as_citizen(tokens["consent_id"])
    # immediate, whatever the push: the very next read is refused before anything was sent
    assert flow.data(tokens["access_token"]).status_code == 401 and receiver.posts == []
    assert shown_state(flow, tokens["consent_id"]) == "sending"
    receiver.behaviour["/events"] = (202, 0.0)
    assert events.pump(flow.gw) == 1 and events.pump(flow.gw) == 0
    [(path, mimetype, body, _)] = receiver.posts
    assert mimetype == "application/secevent+jwt"
    token = jws.JWS()
    token.deserialize(body)
    keys = jwk.JWKSet.from_json(flow.requester.get("/jwks.json").get_data(as_text=True))
    token.verify(keys.get_key(token.jose_header["kid"]), alg="ES256")
    assert token.jose_header["typ"] == "secevent+jwt"
    claims = json.loads(token.payload)
    assert claims["iss"] == flow.issuer and claims["aud"] == "bank-of-example" and claims["jti"]
    event = claims["events"]["https://cdeg.example/events/consent-revoked"]
    assert event["consent_id"] == tokens["consent_id"] and event["revoked_at"]
    assert "A123456" not in json.dumps(claims) and "A1234563" not in json.dumps(claims)
    assert shown_state(flow, tokens["consent_id"]) == "notified"


def test_a_receiver_down_or_answering_500_is_retried_then_failed(flow, receiver):
    receiver.behaviour["/events"] = (500, 0.0)
    with_endpoint(flow, receiver.url("/events"))
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    gw = flow.gw
    for attempt in range(1, gw.config.callback_attempts + 1):
        assert events.pump(gw) == 1
        state = shown_state(flow, tokens["consent_id"])
        if attempt < gw.config.callback_attempts:
            assert state == "retrying" and events.pump(gw) == 0     # not due yet
            gw.clock.advance(events.push.wait_before(gw, attempt))
    assert state == "failed" and len(receiver.posts) == gw.config.callback_attempts
    zh = flow.browser.get("/me?lang=zh-HK").get_data(as_text=True)
    assert "失敗" in zh


def test_a_redirecting_receiver_is_not_followed(flow, receiver):
    receiver.behaviour["/events"] = (302, 0.0)
    with_endpoint(flow, receiver.url("/events"))
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    events.pump(flow.gw)
    assert shown_state(flow, tokens["consent_id"]) == "retrying"
    assert [p[0] for p in receiver.posts] == ["/events"]


def test_a_receiver_refusing_the_event_ends_it_failed_at_once(flow, receiver):
    receiver.behaviour["/events"] = (400, 0.0)
    with_endpoint(flow, receiver.url("/events"))
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    events.pump(flow.gw)
    assert shown_state(flow, tokens["consent_id"]) == "failed"


def test_a_requester_without_an_event_endpoint_is_not_told_and_nothing_waits(flow):
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    assert events.pump(flow.gw) == 0
    assert shown_state(flow, tokens["consent_id"]) is None


@pytest.mark.parametrize("url", ["http://bank.example/events", "https://10.0.0.1/events",
                                 "https://169.254.169.254/"])
def test_an_event_endpoint_outside_demo_is_https_to_a_public_host(flow, url):
    with pytest.raises(requester_registry.RequesterError, match="event endpoint"):
        with flow.gw.transaction() as conn:
            requester_registry.register(
                conn, 0, client_id="bank-of-example", name="Bank of Example", kind="fi",
                jwks=public_jwks("bank-of-example"), redirect_uris=["https://bank.example/cb"],
                webhook_url=url, demo=False)
