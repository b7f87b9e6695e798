"""The citizen's side in a real browser (Debian's headless Chromium): log in, approve, see the
consent and its access log on /me, download and verify the receipt, revoke, see the requester
refused and the revocation event delivered to a test receiver; the same in Traditional Chinese;
and the /demo console end to end. With ``CDEG_SCREENSHOTS=<folder>`` the tests also save the
consent screen, /me and the /demo result there (the README's pictures)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jwt as pyjwt
import pytest
import requests
from jwcrypto import jwk
from selenium.webdriver.common.by import By

from gateway import requester_registry
from gateway.demo.seed import public_jwks, seed
from gateway.jobs import events
from policies.engine import POLICY_DIR, load_file

from .live import live_gateway  # noqa: F401 - the fixture
from .test_browser import (BANK_REDIRECT, approve_in_browser, bank_of, button_named, chromium,  # noqa: F401
                           console_errors, field_labelled, log_in, path_is, wait)
from .test_cdi_callbacks import Receiver

pytestmark = pytest.mark.browser


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CDEG_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1100, 1400)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


@pytest.fixture
def receiver():
    r = Receiver()
    r.behaviour["/events"] = (202, 0.0)
    yield r
    r.server.shutdown()


def with_event_endpoint(live, url: str) -> None:
    gw = live.gw
    with gw.transaction() as conn:
        requester_registry.register(
            conn, gw.clock.now(), client_id="bank-of-example", name="Bank of Example",
            name_zh="示例銀行", kind="fi", jwks=public_jwks("bank-of-example"),
            redirect_uris=[BANK_REDIRECT], policy=load_file(POLICY_DIR / "bank-of-example.yaml"),
            demo=True, webhook_url=url)


def browser_session(driver) -> requests.Session:
    http = requests.Session()
    for cookie in driver.get_cookies():
        http.cookies.set(cookie["name"], cookie["value"], path=cookie.get("path", "/"))
    return http


def card_of(driver, consent_id):
    return driver.find_element(By.CSS_SELECTOR, f'[data-consent-id="{consent_id}"]')


def revoke_on_me(driver, live, consent_id) -> None:
    driver.get(live.url("/me"))
    button_named(driver, "Revoke", within=card_of(driver, consent_id)).click()

    def shows_revoked(d):
        cards = d.find_elements(By.CSS_SELECTOR, f'[data-consent-id="{consent_id}"]')
        return cards and cards[0].find_elements(By.CSS_SELECTOR, '[data-status="revoked"]')
    wait(driver, shows_revoked, "/me does not show the consent as revoked")


@pytest.mark.parametrize("lang", ["en", "zh-HK"])
def test_given_used_receipted_revoked_and_the_requester_told(live_gateway, chromium, receiver,
                                                              lang):
    live = live_gateway
    with_event_endpoint(live, receiver.url("/events"))
    browser = chromium()
    bank = bank_of(live)
    query, verifier = approve_in_browser(browser, live, bank, state=f"story-{lang}")
    tokens = bank.token(query["code"], verifier).json()
    assert bank.data(tokens["access_token"]).status_code == 200
    consent_id = tokens["consent_id"]

    browser.get(live.url(f"/me?lang={lang}"))
    wait(browser, path_is("/me"), "/me did not open")
    # read the card in one script (no element handle can go stale between two reads)
    card = wait(browser, lambda d: d.execute_script("""
        const card = document.querySelector(`[data-consent-id="${arguments[0]}"]`);
        if (!card) return null;
        return {text: card.innerText, log: [...card.querySelectorAll('.access-log li')].map(
            li => ({route: li.dataset.route, items: li.dataset.items, text: li.innerText}))};
        """, consent_id), "/me does not show the consent")
    assert len(card["log"]) == 1 and card["log"][0]["route"] == "api"
    assert "identity.hkid" in card["log"][0]["items"].split(",")
    shown = card["log"][0]["text"]
    assert ("HKID number" in shown and "through the data API" in shown) if lang == "en" \
        else ("香港身份證號碼" in shown and "經數據介面" in shown)
    assert ("Bank of Example" if lang == "en" else "示例銀行") in card["text"]
    screenshot(browser, f"me-{lang}")

    link = wait(browser, lambda d: d.execute_script("""
        const a = document.querySelector(`[data-consent-id="${arguments[0]}"] a.receipt`);
        return a && {href: a.href, download: a.hasAttribute('download')};""", consent_id),
        "no receipt link on the consent's card")
    assert link["download"]
    receipt = browser_session(browser).get(link["href"], timeout=10)
    assert receipt.status_code == 200 and receipt.headers["Content-Type"] == "application/jwt"
    header = pyjwt.get_unverified_header(receipt.text)
    keys = jwk.JWKSet.from_json(requests.get(live.url("/jwks.json"), timeout=10).text)
    public = pyjwt.PyJWK(json.loads(keys.get_key(header["kid"]).export_public())).key
    record = pyjwt.decode(receipt.text, public, algorithms=["ES256"], audience="bank-of-example",
                          issuer=live.base)
    assert header["typ"] == "cdeg-consent-receipt+jwt" and record["consent_id"] == consent_id
    assert record["notice"]["lang"] == "en"       # the consent screen was read in English

    revoke_on_me(browser, live, consent_id)
    assert bank.data(tokens["access_token"]).status_code == 401      # refused at once
    assert events.pump(live.gw) == 1                                 # the worker's push
    assert [p[0] for p in receiver.posts] == ["/events"]
    browser.get(live.url(f"/me?lang={lang}"))
    shown = wait(browser, lambda d: d.execute_script("""
        const e = document.querySelector(
            `[data-consent-id="${arguments[0]}"] .event-delivery`);
        return e && {event: e.dataset.event, text: e.innerText};""", consent_id),
        "the revoked consent does not show how the requester was told")
    assert shown["event"] == "notified"
    assert shown["text"] == ("Notified" if lang == "en" else "已通知")
    assert console_errors(browser) == []


def test_a_newcomer_tries_the_demo_console_end_to_end(live_gateway, chromium):
    live = live_gateway
    seed(live.gw)          # the console's redirect URI under this server's issuer
    browser = chromium()
    browser.get(live.url("/login"))
    browser.find_element(By.CSS_SELECTOR, ".demo-link a").click()
    wait(browser, path_is("/demo"), "the login page's demo link did not open /demo")
    section = browser.find_element(
        By.CSS_SELECTOR, '[data-client-id="bank-of-example"][data-purpose="ekyc-account-opening"]')
    from selenium.webdriver.support.ui import Select
    Select(section.find_element(By.NAME, "access")).select_by_value("ongoing")
    button_named(browser, "Start", within=section).click()
    log_in(browser)
    wait(browser, path_is("/oauth/authorize"), "the console did not lead to the consent screen")
    assert browser.find_element(By.ID, "requester-name").text == "Bank of Example"
    screenshot(browser, "consent-screen")
    button_named(browser, "Approve").click()
    wait(browser, path_is("/demo/callback"), "Approve did not come back to the console")
    claims = json.loads(browser.find_element(By.ID, "token-claims").text)
    assert claims["client_id"] == "bank-of-example" and claims["iss"] == live.base
    data = json.loads(browser.find_element(By.ID, "data-released").text)
    assert data["items"]["identity.hkid"]["value"] == "A123456(3)"
    cdi = json.loads(browser.find_element(By.ID, "cdi-result").text)
    assert cdi["aud"] == "bank-of-example" and cdi["items"]["identity.name_en"]
    screenshot(browser, "demo-result")
    assert console_errors(browser) == []


def test_keyboard_only_with_javascript_off_a_citizen_logs_in_and_approves(live_gateway,
                                                                         tmp_path):
    """No mouse, no JavaScript: Tab to each control, type, press Enter (SECURITY: no inline
    script; issue 10: keyboard-only and no-JavaScript use work)."""
    from selenium.webdriver.common.keys import Keys

    from .test_browser import push, start_chromium
    options_pref = {"profile.managed_default_content_settings.javascript": 2}
    driver = start_chromium(tmp_path / "nojs-profile", prefs=options_pref)
    try:
        bank = bank_of(live_gateway)
        url, verifier = push(bank, "keyboard")
        driver.get(url)
        wait(driver, path_is("/login"), "not sent to the login page")
        focus = driver.switch_to.active_element
        for _ in range(12):                        # Tab from the top until the HKID field
            focus.send_keys(Keys.TAB)
            focus = driver.switch_to.active_element
            if focus.get_attribute("name") == "hkid":
                break
        assert focus.get_attribute("name") == "hkid", "the HKID field is not reachable by Tab"
        focus.send_keys("A123456(3)", Keys.ENTER)
        wait(driver, path_is("/login/code"), "Enter did not submit the login")
        code = driver.find_element(By.ID, "demo-code").text.strip()
        focus = driver.switch_to.active_element
        for _ in range(15):
            focus.send_keys(Keys.TAB)
            focus = driver.switch_to.active_element
            if focus.get_attribute("name") == "code":
                break
        focus.send_keys(code, Keys.ENTER)
        wait(driver, path_is("/oauth/authorize"), "Enter did not verify the code")
        focus = driver.switch_to.active_element
        for _ in range(40):                        # Tab on to the Approve button
            focus.send_keys(Keys.TAB)
            focus = driver.switch_to.active_element
            if focus.get_attribute("value") == "approve":
                break
        assert focus.get_attribute("value") == "approve", "Approve is not reachable by Tab"
        focus.send_keys(Keys.ENTER)
        wait(driver, lambda d: d.current_url.startswith(BANK_REDIRECT),
             "Enter on Approve did not answer the request")
        code = dict(p.split("=", 1) for p in driver.current_url.split("?", 1)[1].split("&"))["code"]
        assert bank.token(code, verifier).status_code == 200
    finally:
        driver.quit()


def test_the_api_docs_page_renders_every_operation_in_chromium(live_gateway, chromium):
    browser = chromium()
    browser.get(live_gateway.url("/docs"))
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10,
         "Swagger UI did not render the operations of /openapi.json")
    shown = browser.find_element(By.TAG_NAME, "body").text
    for path in ("/oauth/par", "/api/v1/data", "/cdi/v1/queries"):
        assert path in shown, path
    assert not [e for e in console_errors(browser) if "Refused to" in e["message"]]
