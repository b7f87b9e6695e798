"""Rate limits: per requester at the OAuth endpoints and the data API, per address at the login
(wrong codes per citizen: test_login_guessing.py); over the limit a 429 with Retry-After, and
nothing else happens."""
from __future__ import annotations

import time

import pytest

from gateway.errors import StoreUnavailable, Throttled
from gateway.rate_limits import Leases

from .conftest import REDIS_URL, build_app, make_config
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


# -- the data API's limit in leases (gateway/rate_limits.py, Leases) ---------------------------

class _Process:
    """What Leases needs of a gateway: its Redis, here the real one under a test's prefix."""
    def __init__(self, prefix: str):
        from gateway.store.redis import RedisStore
        self.redis = RedisStore(REDIS_URL, prefix)


def _takes_counted(process, monkeypatch) -> list[int]:
    """The units of every lease ``process`` takes from Redis, one entry a round trip."""
    taken: list[int] = []
    take = process.redis.take
    monkeypatch.setattr(process.redis, "take",
                        lambda kind, ident, units, window: taken.append(units) or
                        take(kind, ident, units, window))
    return taken


def _burst(leases, process, calls: int, limit: int) -> tuple[int, int]:
    """(calls let through, calls throttled) of ``calls`` made back to back."""
    passed = throttled = 0
    for _ in range(calls):
        try:
            leases.spend(process, "client", "bank", limit, 60)
            passed += 1
        except Throttled:
            throttled += 1
    return passed, throttled


def test_a_burst_of_data_calls_takes_leases_so_redis_sees_far_fewer_round_trips(redis_prefix,
                                                                              monkeypatch):
    process = _Process(redis_prefix)
    taken = _takes_counted(process, monkeypatch)
    assert _burst(Leases(16, 50), process, 200, 100_000) == (200, 0)
    assert len(taken) < 200 / 4 and max(taken) == 16
    assert int(process.redis.client.get(process.redis.key("rate", "client", "bank"))) == \
        sum(taken) >= 200   # Redis counted every call before it was made


def test_leases_in_several_processes_never_let_a_requester_past_its_limit(redis_prefix):
    limit = 500
    processes = [(Leases(16, 50), _Process(redis_prefix)) for _ in range(3)]
    passed = 0
    for _ in range(300):                 # interleaved: each process holds a lease of its own
        for leases, process in processes:
            passed += _burst(leases, process, 1, limit)[0]
    assert limit - 3 * 16 <= passed <= limit


def test_a_small_limit_is_counted_call_by_call(redis_prefix, monkeypatch):
    process = _Process(redis_prefix)
    taken = _takes_counted(process, monkeypatch)
    assert _burst(Leases(16, 50), process, 40, 30) == (30, 10)
    assert set(taken) == {1}


def test_with_redis_down_a_lease_taken_before_lapses_within_its_life(redis_prefix, monkeypatch):
    process = _Process(redis_prefix)
    leases = Leases(16, 50)
    _burst(leases, process, 100, 100_000)          # leases of 16 by now
    held = leases._held[("client", "bank")]
    while held.units != 15:                        # one just taken
        _burst(leases, process, 1, 100_000)
        held = leases._held[("client", "bank")]

    def down(*args):
        raise StoreUnavailable("redis did not answer")
    monkeypatch.setattr(process.redis, "take", down)
    time.sleep(0.06)
    with pytest.raises(StoreUnavailable):      # lapsed: nothing is spent without Redis
        leases.spend(process, "client", "bank", 100_000, 60)
