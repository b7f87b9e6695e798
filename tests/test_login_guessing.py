"""Second-factor guessing: a fixed number of code guesses per citizen, however many addresses
guess, and no lockout of the citizen's own browser (the design is in gateway/mock_iam_smart.py)."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from gateway import mock_iam_smart
from gateway.config import Config
from gateway.errors import Throttled

DEFAULTS = Config()  # the limits every test app keeps

from .flow import HKID, Flow

ATTACKER_HKID = "G123456(A)"  # the attacker's own identity, also known to ImmD


def _at_window_start(clock, window: int = DEFAULTS.wrong_code_window) -> None:
    """Move the gateway clock to the start of a window, so no test straddles one by chance."""
    clock.advance(window - clock.now() % window)


def _wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


class Browser:
    """One browser at one address."""

    def __init__(self, app, address: str):
        self.client, self.env = app.test_client(), {"REMOTE_ADDR": address}
        self.page = ""

    def start(self, hkid: str = HKID) -> str:
        page = self.client.get("/login", environ_base=self.env).get_data(as_text=True)
        resp = self.client.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": hkid},
                                environ_base=self.env)
        assert resp.status_code == 303, resp.status_code
        self.page = self.client.get("/login/code", environ_base=self.env).get_data(as_text=True)
        return re.search(r'id="demo-code">(\d{6})<', self.page).group(1)

    def enter(self, code: str):
        return self.client.post("/login/code", data={"csrf_token": Flow.csrf(self.page),
                                                     "code": code}, environ_base=self.env)

    def log_in(self, hkid: str = HKID):
        return self.enter(self.start(hkid))

    def log_out(self) -> None:
        page = self.client.get("/me", environ_base=self.env).get_data(as_text=True)
        self.client.post("/logout", data={"csrf_token": Flow.csrf(page)}, environ_base=self.env)


def _hammer(app, addresses: range, hkid: str = HKID, prefix: str = "10.66") -> dict:
    """Each address starts a login for ``hkid`` and enters wrong codes until its pending login
    is spent or it is refused. Answers how many codes were compared (400) and refused (429)."""
    seen = {"compared": 0, "refused": 0}
    for i in addresses:
        browser = Browser(app, f"{prefix}.{i // 250}.{i % 250 + 1}")
        wrong = _wrong(browser.start(hkid))
        for _ in range(DEFAULTS.login_code_attempts):
            resp = browser.enter(wrong)
            if resp.status_code == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                seen["refused"] += 1
                break
            assert resp.status_code == 400, resp.status_code
            seen["compared"] += 1
    return seen


def test_code_guesses_per_citizen_are_bounded_however_many_addresses_guess(app, clock):
    """30 addresses, 5 tries each: only 10 codes are compared in the window; after that even the
    right code is not compared for a browser that never logged in as the citizen."""
    _at_window_start(clock)
    seen = _hammer(app, range(30))
    assert seen["compared"] == DEFAULTS.unmarked_wrong_codes == 10
    assert seen["refused"] == 30 - 2
    newcomer = Browser(app, "10.77.0.1")
    resp = newcomer.enter(newcomer.start())
    assert resp.status_code == 429 and "Too many wrong codes" in resp.get_data(as_text=True)
    clock.advance(DEFAULTS.wrong_code_window)  # the next window: the budget is back
    assert newcomer.log_in().status_code == 303


def test_code_guesses_per_citizen_are_bounded_per_day(app, clock):
    _at_window_start(clock, DEFAULTS.wrong_code_day)
    compared = []
    for window in range(6):
        compared.append(_hammer(app, range(window * 4, window * 4 + 4))["compared"])
        clock.advance(DEFAULTS.wrong_code_window)
    assert compared == [10, 10, 10, 10, 10, 0]
    assert sum(compared) == DEFAULTS.unmarked_wrong_codes_a_day == 50


def test_citizen_logs_in_from_own_browser_while_others_hammer_the_hkid(app, clock):
    _at_window_start(clock)
    citizen = Browser(app, "10.9.9.9")
    assert citizen.log_in().status_code == 303  # an earlier visit: this browser gets a mark
    citizen.log_out()
    seen = _hammer(app, range(40))
    assert seen["compared"] == 10 and seen["refused"] == 38
    code = citizen.start()
    assert citizen.enter(_wrong(code)).status_code == 400  # a typo is compared, not refused
    resp = citizen.enter(code)
    assert resp.status_code == 303 and resp.headers["Location"] == "/me"
    assert citizen.client.get("/me", environ_base=citizen.env).status_code == 200


def test_a_device_mark_of_another_citizen_buys_no_guesses(app, clock):
    _at_window_start(clock)
    attacker = Browser(app, "10.66.200.1")
    assert attacker.log_in(ATTACKER_HKID).status_code == 303  # a genuine mark, for G123456(A)
    attacker.log_out()
    assert attacker.client.get_cookie(mock_iam_smart.DEVICE_COOKIE, path="/login") is not None
    _hammer(app, range(3))  # spends the budget shared by unmarked browsers
    assert attacker.enter(_wrong(attacker.start())).status_code == 429
    forged = Browser(app, "10.66.200.2")
    forged.client.set_cookie(mock_iam_smart.DEVICE_COOKIE, "abc.0123456789abcdef0123456789abcdef",
                             path="/login")
    assert forged.enter(_wrong(forged.start())).status_code == 429


def test_parallel_guesses_cannot_pass_the_citizen_budget(gw, clock):
    """Budget units are reserved before the code is compared, in one MULTI."""
    _at_window_start(clock)
    pending = [mock_iam_smart.start(gw, HKID) for _ in range(30)]

    def guess(started):
        logged_in, code = started
        try:
            mock_iam_smart.verify(gw, dict(logged_in), _wrong(code))
        except Throttled:
            return "refused"
        except mock_iam_smart.LoginError:
            return "compared"
        return "logged in"
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(guess, pending))
    assert outcomes.count("compared") == DEFAULTS.unmarked_wrong_codes
    assert outcomes.count("refused") == 30 - DEFAULTS.unmarked_wrong_codes


def test_right_codes_cost_no_budget(app, clock):
    """A citizen who logs in many times from new browsers never spends the budget."""
    _at_window_start(clock)
    for i in range(DEFAULTS.unmarked_wrong_codes + 3):
        assert Browser(app, f"10.5.0.{i + 1}").log_in().status_code == 303
    assert _hammer(app, range(3))["compared"] == DEFAULTS.unmarked_wrong_codes
