"""Rate limits: per requester at the OAuth endpoints and the data API, per address at the login
(wrong codes per citizen: test_login_guessing.py); over the limit a 429 with Retry-After, and
nothing else happens."""
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


def test_login_starts_for_a_citizen_from_other_addresses_do_not_lock_them_out(tmp_path, request,
                                                                            clock):
    """Starting logins is limited per address only: 25 starts for the citizen's HKID from 25
    other addresses leave the citizen free to log in (code guesses are bounded per citizen
    instead: tests/test_login_guessing.py)."""
    app = _app(tmp_path, request, clock, login_rate_per_minute=2)
    for i in range(25):
        browser = app.test_client()
        page = browser.get("/login").get_data(as_text=True)
        assert browser.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": HKID},
                            environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code == 303
    citizen = Flow(app)
    resp = citizen.login()  # from the test client's own address, 127.0.0.1
    assert resp.status_code == 303 and resp.headers["Location"] == "/me"


def test_login_attempts_from_one_address_are_limited(tmp_path, request, clock):
    app = _app(tmp_path, request, clock, login_rate_per_minute=2)
    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    statuses = [browser.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": hkid},
                             environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code
                for hkid in (HKID, "G123456(A)", "AB987654(3)")]
    assert statuses == [303, 303, 429]
