"""Rate limits: per requester at the OAuth endpoints and the data API, per address and per
citizen at the login; over the limit a 429 with Retry-After, and nothing else happens."""
from __future__ import annotations

from .conftest import build_app, make_config
from .flow import HKID, Flow, ledger_snapshot


def _app(tmp_path, request, clock, **limits):
    return build_app(make_config(tmp_path, "services", request, **limits), clock)


def test_requester_over_its_oauth_limit_gets_429_and_nothing_is_stored(tmp_path, request, clock):
    flow = Flow(_app(tmp_path, request, clock, oauth_rate_per_minute=3))
    for _ in range(3):
        assert flow.par().status_code == 201
    before = ledger_snapshot(flow.gw)
    resp = flow.par()
    assert resp.status_code == 429
    assert resp.get_json()["error"] == "slow_down" and int(resp.headers["Retry-After"]) >= 1
    assert ledger_snapshot(flow.gw) == before


def test_requester_over_its_data_limit_gets_429(tmp_path, request, clock):
    flow = Flow(_app(tmp_path, request, clock, client_rate_per_minute=2))
    tokens = flow.tokens()
    assert flow.data(tokens["access_token"]).status_code == 200
    assert flow.data(tokens["access_token"]).status_code == 200
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 429 and resp.headers["Retry-After"]
    assert resp.mimetype == "application/problem+json"


def test_login_attempts_for_one_citizen_are_limited_across_addresses(tmp_path, request, clock):
    app = _app(tmp_path, request, clock, login_rate_per_minute=2)
    statuses = []
    for i in range(3):
        browser = app.test_client()
        page = browser.get("/login").get_data(as_text=True)
        statuses.append(browser.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": HKID},
                                     environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code)
    assert statuses == [303, 303, 429]
