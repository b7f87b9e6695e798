"""/demo (SPEC 6, demo mode only): a person acts as a demo requester — a real grant through the
gateway's own endpoints (PAR, private_key_jwt, PKCE) — approves as the citizen, and sees the
token's claims, the data, a pre-filled form or a CDI result."""
from __future__ import annotations

import html
import json
import re
from urllib.parse import urlsplit

import pytest

from gateway.demo.seed import seed
from tests.conftest import build_app, make_config
from tests.flow import Flow

LOOPBACK_ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def app(tmp_path, request, clock):
    """An embedded gateway whose issuer is on loopback: the console's redirect URI can be
    registered (seeded again: the session's template was seeded under another issuer)."""
    application = build_app(make_config(tmp_path, "embedded", request, issuer=LOOPBACK_ISSUER),
                            clock)
    seed(application.extensions["cdeg"])
    yield application
    application.extensions["cdeg"].close()


def start(flow, client_id, purpose, **form):
    page = flow.browser.get("/demo")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert f'data-client-id="{client_id}" data-purpose="{purpose}"' in text
    return flow.browser.post("/demo/start", data={
        "csrf_token": flow.csrf(text), "client_id": client_id, "purpose": purpose, **form})


def approve_and_follow(flow, resp):
    assert resp.status_code == 303
    target = urlsplit(resp.headers["Location"])
    assert target.path == "/oauth/authorize"
    request_uri = dict(p.split("=", 1) for p in target.query.split("&"))["request_uri"]
    from urllib.parse import unquote
    flow.login(next_url=target.path + "?" + target.query)
    answer = flow.decide(unquote(request_uri), "approve")
    assert answer.status_code == 303
    back = urlsplit(answer.headers["Location"])
    assert back.path == "/demo/callback"
    return flow.browser.get(back.path + "?" + back.query)


def test_the_bank_asks_the_citizen_approves_and_the_console_shows_token_data_and_cdi(app):
    flow = Flow(app)
    resp = start(flow, "bank-of-example", "ekyc-account-opening", access="ongoing",
                 items=["address.proof"])
    result = approve_and_follow(flow, resp)
    assert result.status_code == 200
    page = result.get_data(as_text=True)
    claims = json.loads(html.unescape(re.search(r'<pre id="token-claims">(.*?)</pre>',
                                                page, re.S).group(1)))
    assert claims["client_id"] == "bank-of-example" and claims["notice_digest"]
    data = json.loads(html.unescape(re.search(r'<pre id="data-released">(.*?)</pre>',
                                              page, re.S).group(1)))
    assert data["items"]["identity.hkid"]["value"] == "A123456(3)"
    assert "address.proof" in data["items"] and "contact.mobile" not in data["items"]
    cdi = json.loads(html.unescape(re.search(r'<pre id="cdi-result">(.*?)</pre>',
                                             page, re.S).group(1)))
    assert cdi["aud"] == "bank-of-example" and "identity.hkid" in cdi["items"]
    me = flow.browser.get("/me").get_data(as_text=True)
    assert claims["consent_id"] in me and 'data-route="cdi"' in me


def test_a_department_pulls_its_prefilled_form(app):
    flow = Flow(app, "transport-department")
    resp = start(flow, "transport-department", "vehicle-licence-renewal", access="once")
    page = approve_and_follow(flow, resp).get_data(as_text=True)
    assert 'id="prefilled-form"' in page and "CHAN" in page


def test_the_console_refuses_a_forged_start_and_a_foreign_answer(app):
    flow = Flow(app)
    page = flow.browser.get("/demo").get_data(as_text=True)
    forged = flow.browser.post("/demo/start", data={"client_id": "bank-of-example",
                                                    "purpose": "ekyc-account-opening"})
    assert forged.status_code == 400                         # no CSRF token
    unknown = flow.browser.post("/demo/start", data={"csrf_token": flow.csrf(page),
                                                     "client_id": "evil", "purpose": "x"})
    assert unknown.status_code == 400
    stray = flow.browser.get("/demo/callback?code=abc&state=not-ours")
    assert stray.status_code == 400


def test_the_console_is_linked_in_demo_mode_and_absent_in_production(app):
    flow = Flow(app)
    assert 'href="/demo"' in flow.browser.get("/login").get_data(as_text=True)
    gw = flow.gw
    demo_config = gw.config
    gw.config = demo_config.with_(env="production")
    try:
        assert flow.browser.get("/demo").status_code == 404
        assert flow.browser.get("/demo/callback?state=x").status_code == 404
        assert 'href="/demo"' not in flow.browser.get("/login").get_data(as_text=True)
    finally:
        gw.config = demo_config


def test_the_console_in_traditional_chinese(app):
    flow = Flow(app)
    page = flow.browser.get("/demo?lang=zh-HK").get_data(as_text=True)
    assert "以索取者身分試用閘道" in page and "示例銀行" in page and "開始" in page


def test_a_once_consent_is_read_once_through_cdi(app):
    flow = Flow(app)
    resp = start(flow, "bank-of-example", "ekyc-account-opening", access="once")
    page = approve_and_follow(flow, resp).get_data(as_text=True)
    assert 'id="data-released"' not in page
    cdi = json.loads(html.unescape(re.search(r'<pre id="cdi-result">(.*?)</pre>',
                                             page, re.S).group(1)))
    assert cdi["aud"] == "bank-of-example"
