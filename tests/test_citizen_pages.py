"""The citizen's pages: login, consent screen and /me, and the browser-side protections."""
from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from sqlalchemy import text as sql

from .flow import HKID, Flow, ledger_snapshot


def test_login_gives_a_new_session_id_and_logout_ends_it_server_side(flow):
    flow.browser.get("/login")
    before = flow.browser.get_cookie("cdeg_session").value
    flow.login()
    after = flow.browser.get_cookie("cdeg_session").value
    assert before != after
    assert flow.browser.get("/me").status_code == 200
    page = flow.browser.get("/me").get_data(as_text=True)
    flow.browser.post("/logout", data={"csrf_token": flow.csrf(page)})
    stolen = flow.app.test_client()
    stolen.set_cookie("cdeg_session", after)
    assert stolen.get("/me").status_code == 303  # the old id is dead on the server


def test_session_cookie_is_httponly_and_samesite(flow):
    resp = flow.browser.get("/login")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("hkid, message", [("A123456(4)", "check digit"),
                                           ("Z99999(9)", "like A123456(3)"),
                                           ("A<script>", "like A123456(3)")])
def test_login_with_a_bad_hkid_explains_why(flow, hkid, message):
    resp = flow.login(hkid=hkid)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)
    assert "<script>" not in resp.get_data(as_text=True)


UNKNOWN_HKID = "C123456(9)"  # a well-formed number ImmD does not know


def _start_login(app, hkid):
    """A new browser enters ``hkid``: answers (browser, the POST /login response)."""
    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    return browser, browser.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": hkid})


def _as_seen(page: str) -> str:
    """A page with what differs between any two visits (CSRF token, demo code) blanked."""
    page = re.sub(r'name="csrf_token" value="[^"]+"', 'name="csrf_token" value=""', page)
    return re.sub(r'id="demo-code">\d{6}<', 'id="demo-code">######<', page)


def test_unknown_hkid_login_looks_like_a_known_one(flow):
    """Whether ImmD knows an HKID shows nowhere: same redirect, same code page with a demo
    code, and the code entered there is refused with the same page as a wrong code."""
    seen = {}
    for hkid in (HKID, UNKNOWN_HKID):
        browser, resp = _start_login(flow.app, hkid)
        assert resp.status_code == 303, resp.get_data(as_text=True)
        page = browser.get(resp.headers["Location"])
        assert page.status_code == 200
        shown = page.get_data(as_text=True)
        code = re.search(r'id="demo-code">(\d{6})<', shown).group(1)
        entered = code if hkid == UNKNOWN_HKID else ("000000" if code != "000000" else "111111")
        refused = browser.post("/login/code", data={"csrf_token": Flow.csrf(shown),
                                                    "code": entered})
        seen[hkid] = (resp.headers["Location"], _as_seen(shown), refused.status_code,
                      _as_seen(refused.get_data(as_text=True)))
    assert seen[UNKNOWN_HKID] == seen[HKID]
    assert seen[HKID][0] == "/login/code" and seen[HKID][2] == 400
    assert "the code does not match" in seen[HKID][3]


def _citizens(gw) -> int:
    with gw.db.connect() as conn:
        return conn.execute(sql("SELECT COUNT(*) FROM citizens")).scalar()


def test_unknown_hkid_code_never_verifies(flow):
    enrolled = _citizens(flow.gw)
    browser, resp = _start_login(flow.app, UNKNOWN_HKID)
    assert resp.status_code == 303
    page = browser.get(resp.headers["Location"]).get_data(as_text=True)
    code = re.search(r'id="demo-code">(\d{6})<', page).group(1)
    answers = [browser.post("/login/code", data={"csrf_token": Flow.csrf(page), "code": code})
               for _ in range(6)]
    assert [a.status_code for a in answers] == [400] * 6
    assert "the code has expired" in answers[-1].get_data(as_text=True)
    assert browser.get("/me").status_code == 303  # never logged in
    assert _citizens(flow.gw) == enrolled


def test_immd_outage_is_told_the_same_whatever_the_hkid(flow, monkeypatch):
    from connectors.base import SourceUnavailable

    def down(hkid, items):
        raise SourceUnavailable("immd: no answer")
    monkeypatch.setattr(flow.gw.router.connectors["immd"], "fetch", down)
    pages = []
    for hkid in (HKID, UNKNOWN_HKID):
        _, resp = _start_login(flow.app, hkid)
        assert resp.status_code == 400
        pages.append(_as_seen(resp.get_data(as_text=True)))
    assert pages[0] == pages[1] and "iAM Smart cannot be reached" in pages[0]


def test_wrong_code_is_refused_and_attempts_are_limited(flow):
    page = flow.browser.get("/login").get_data(as_text=True)
    resp = flow.browser.post("/login", data={"csrf_token": flow.csrf(page), "hkid": HKID})
    page = flow.browser.get(resp.headers["Location"]).get_data(as_text=True)
    code = re.search(r'id="demo-code">(\d{6})<', page).group(1)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert flow.browser.post("/login/code", data={"csrf_token": flow.csrf(page),
                                                      "code": wrong}).status_code == 400
    resp = flow.browser.post("/login/code", data={"csrf_token": flow.csrf(page), "code": code})
    assert resp.status_code == 400  # five wrong attempts spend the code


def test_posts_without_csrf_token_are_refused(flow):
    tokens = flow.tokens()
    before = ledger_snapshot(flow.gw)
    resp = flow.browser.post(f"/me/consents/{tokens['consent_id']}/revoke", data={})
    assert resp.status_code == 400
    assert ledger_snapshot(flow.gw) == before
    assert flow.data(tokens["access_token"]).status_code == 200


def test_authorize_without_a_pushed_request_is_refused(flow):
    flow.login()
    resp = flow.browser.get("/oauth/authorize?" + urlencode({
        "client_id": flow.client_id, "response_type": "code",
        "redirect_uri": flow.redirect_uri, "code_challenge": "x" * 43}))
    assert resp.status_code == 400
    assert "par" in resp.get_data(as_text=True).lower()


def test_request_uri_is_bound_to_its_client(app):
    bank, td = Flow(app), Flow(app, "transport-department")
    request_uri = bank.par().get_json()["request_uri"]
    td.login()
    resp = td.consent_page(request_uri)
    assert resp.status_code == 400


def test_request_uri_is_used_once_at_approval(flow):
    request_uri = flow.par().get_json()["request_uri"]
    flow.login()
    assert flow.consent_page(request_uri).status_code == 200
    assert flow.consent_page(request_uri).status_code == 200  # page loads do not use it
    assert flow.decide(request_uri).status_code == 303
    assert flow.consent_page(request_uri).status_code == 400


def test_expired_request_uri_is_refused(flow, clock):
    request_uri = flow.par().get_json()["request_uri"]
    flow.login()
    clock.advance(601)
    assert flow.consent_page(request_uri).status_code == 400


def test_consent_screen_shows_who_why_what_and_how_long(flow):
    request_uri = flow.par().get_json()["request_uri"]
    flow.login()
    page = flow.consent_page(request_uri).get_data(as_text=True)
    for text in ("Bank of Example", "Open a bank account remotely", "CHAN, Tai Man",
                 "A123456(3)", "Mei Foo Sun Chuen", ">Approve<", ">Decline<", 'href="/me"'):
        assert text in page, text


def test_consent_screen_in_traditional_chinese(flow):
    request_uri = flow.par().get_json()["request_uri"]
    flow.login()
    page = flow.browser.get("/oauth/authorize?" + urlencode({
        "client_id": flow.client_id, "request_uri": request_uri, "lang": "zh-HK"})).get_data(as_text=True)
    for text in ("示例銀行", "遙距開立銀行戶口", "香港身份證號碼", 'lang="zh-HK"', "Approve", "批准"):
        assert text in page, text
    remembered = flow.consent_page(request_uri).get_data(as_text=True)
    assert "示例銀行" in remembered  # the choice is remembered for the session


def test_pages_send_security_headers(flow):
    flow.login()
    resp = flow.browser.get("/me")
    csp = resp.headers["Content-Security-Policy"]
    for directive in ("frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"]
    assert "no-store" in resp.headers["Cache-Control"]
    assert "<script>" not in resp.get_data(as_text=True)


def test_consent_page_allows_the_form_to_reach_the_registered_redirect_origin(flow):
    request_uri = flow.par().get_json()["request_uri"]
    flow.login()
    csp = flow.consent_page(request_uri).headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:9100" in csp


def test_citizen_cannot_revoke_another_citizens_consent(app):
    owner, other = Flow(app), Flow(app)
    tokens = owner.tokens()
    other.login(hkid="G123456(A)")
    page = other.browser.get("/me").get_data(as_text=True)
    resp = other.browser.post(f"/me/consents/{tokens['consent_id']}/revoke",
                              data={"csrf_token": other.csrf(page)})
    assert resp.status_code == 404
    assert owner.data(tokens["access_token"]).status_code == 200
    assert tokens["consent_id"] not in page


def test_login_next_cannot_send_the_citizen_elsewhere(flow):
    resp = flow.login(next_url="https://evil.example/")
    assert resp.status_code == 303 and resp.headers["Location"] == "/me"
    flow2 = Flow(flow.app)
    resp = flow2.login(next_url="//evil.example/x")
    assert resp.headers["Location"] == "/me"


def test_me_lists_consents_with_reads_and_revoke(flow):
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    page = flow.browser.get("/me").get_data(as_text=True)
    assert f'data-consent-id="{tokens["consent_id"]}"' in page
    assert "Bank of Example" in page and ">Revoke<" in page
    assert "identity.name_en" in page and "api" in page  # the access log


def test_me_needs_login(flow):
    resp = flow.browser.get("/me")
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/login")


@pytest.mark.parametrize("path", ["/no-such-page", "/me/consents/x/revoke"])
def test_unknown_pages_and_methods_answer_cleanly(flow, path):
    resp = flow.browser.get(path)
    assert resp.status_code in (404, 405)
    assert "Traceback" not in resp.get_data(as_text=True)


def test_parallel_guesses_cannot_pass_the_attempt_limit(gw):
    """Each parallel request sees the session as it was (attempts 0); Redis counts them all."""
    from gateway import mock_iam_smart
    pending, code = mock_iam_smart.start(gw, HKID)
    for _ in range(gw.config.login_code_attempts):
        with pytest.raises(mock_iam_smart.LoginError):
            mock_iam_smart.verify(gw, dict(pending), "000000" if code != "000000" else "111111")
    with pytest.raises(mock_iam_smart.LoginError, match="expired"):
        mock_iam_smart.verify(gw, dict(pending), code)


def test_me_is_paginated_newest_first(flow, monkeypatch):
    import re

    from gateway.consent import citizen_view
    monkeypatch.setattr(citizen_view, "PAGE_SIZE", 2)
    made = [flow.tokens()["consent_id"] for _ in range(3)]
    first = flow.browser.get("/me").get_data(as_text=True)
    second = flow.browser.get("/me?page=2").get_data(as_text=True)
    shown = [re.findall(r'data-consent-id="([^"]+)"', page) for page in (first, second)]
    assert len(shown[0]) == 2 and len(shown[1]) == 1
    assert sorted(shown[0] + shown[1]) == sorted(made)
    assert 'rel="next"' in first and 'rel="prev"' in second and 'rel="next"' not in second
    for bad in ("zz", "-1", "0", "1000000000", "1&page=2"):
        resp = flow.browser.get(f"/me?page={bad}")
        assert resp.status_code == 400 and resp.mimetype == "text/html", bad


def test_me_groups_consents_active_then_expired_revoked_declined(flow):
    import re
    active = flow.tokens()["consent_id"]
    revoked = flow.tokens()["consent_id"]
    flow.revoke_as_citizen(revoked)
    par = flow.par()
    declined_answer = flow.decide(par.get_json()["request_uri"], "decline")
    assert declined_answer.status_code == 303
    page = flow.browser.get("/me").get_data(as_text=True)
    groups = re.findall(r'data-group="([a-z]+)"', page)
    assert groups == ["approved", "revoked", "declined"]
    order = re.findall(r'data-consent-id="([^"]+)"', page)
    assert order[:2] == [active, revoked]
    zh = flow.browser.get("/me?lang=zh-HK").get_data(as_text=True)
    assert "生效中" in zh and "已撤回" in zh and "已拒絕" in zh


def test_me_costs_the_same_statements_for_one_consent_or_many(flow):
    from sqlalchemy import event

    def statements_for_me() -> int:
        sent = []
        listener = lambda *args: sent.append(1)   # noqa: E731
        event.listen(flow.gw.db.engine, "before_cursor_execute", listener)
        try:
            assert flow.browser.get("/me").status_code == 200
        finally:
            event.remove(flow.gw.db.engine, "before_cursor_execute", listener)
        return len(sent)

    first = flow.tokens()
    flow.data(first["access_token"])
    one = statements_for_me()
    for _ in range(4):
        tokens = flow.tokens()
        flow.data(tokens["access_token"])
        flow.data(tokens["access_token"])
    assert statements_for_me() == one


def test_me_shows_times_the_hong_kong_way_in_either_language(flow, clock):
    import re
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    page = flow.browser.get("/me").get_data(as_text=True)
    stamp = re.search(r'<time datetime="(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):\d\dZ">([^<]+)</time>',
                      page)
    assert stamp, page
    from datetime import datetime, timedelta
    utc = datetime(*map(int, stamp.groups()[:5]))
    hk = utc + timedelta(hours=8)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    assert stamp.group(6) == f"{hk.day} {months[hk.month - 1]} {hk.year}, {hk:%H:%M}"
    zh = flow.browser.get("/me?lang=zh-HK").get_data(as_text=True)
    assert f"{hk.year}年{hk.month}月{hk.day}日 {hk:%H:%M}" in zh


def test_a_replayed_revoke_is_refused_clearly_and_changes_nothing(flow):
    from tests.flow import ledger_snapshot
    tokens = flow.tokens()
    page = flow.browser.get("/me").get_data(as_text=True)
    form = {"csrf_token": flow.csrf(page)}
    first = flow.browser.post(f"/me/consents/{tokens['consent_id']}/revoke", data=form)
    assert first.status_code == 303
    before = ledger_snapshot(flow.gw)
    again = flow.browser.post(f"/me/consents/{tokens['consent_id']}/revoke", data=form)
    assert again.status_code == 409 and again.mimetype == "text/html"
    assert "Traceback" not in again.get_data(as_text=True)
    assert ledger_snapshot(flow.gw) == before
