"""The citizen pages in a real browser: Debian's headless Chromium driven by selenium.

The browser finds controls the way a person (or a screen reader) does: fields by their
<label>, buttons by their accessible name (SPEC 3 and 6). The bank is a test helper speaking
HTTP (gateway.demo.agent.Requester). Nothing listens on the bank's redirect URI; the browser's
last URL is read instead.

Selenium never downloads a browser here: the Chromium and chromedriver of the system are named
explicitly. When they are missing the tests fail (CI must count them), saying what to install.
"""
from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException,
                                        StaleElementReferenceException, WebDriverException)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.demo.agent import Requester
from gateway.demo.seed import private_jwks

from .flow import BANK, BANK_DETAIL, HKID, redirect_uri_of
from .live import live_gateway  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run")
BANK_REDIRECT = redirect_uri_of(BANK)
DETAIL = BANK_DETAIL
WAIT = 15


# -- the browser -----------------------------------------------------------------------------------

def start_chromium(profile_dir, prefs: dict | None = None) -> webdriver.Chrome:
    """Debian's headless Chromium under its chromedriver. Called from inside the tests, so a
    missing browser is a test failure (not a setup error, and never a skip). ``prefs``:
    Chromium preferences (JavaScript off, say)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"the browser tests need Debian's Chromium and chromedriver; missing: "
                    f"{', '.join(missing)}. Install them with: {INSTALL}", pytrace=False)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    if prefs:
        options.add_experimental_option("prefs", prefs)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.fail(f"Chromium did not start ({exc.msg}); the browser tests need Debian's "
                    f"Chromium and chromedriver of the same version: {INSTALL}", pytrace=False)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    """Answers a function that starts the browser (once) and quits it after the test."""
    monkeypatch.setenv("SE_OFFLINE", "true")      # Selenium Manager must never download
    started: list = []

    def start() -> webdriver.Chrome:
        if not started:
            started.append(start_chromium(tmp_path / "chromium-profile"))
        return started[0]

    yield start
    for driver in started:
        driver.quit()


def console_errors(driver) -> list[dict]:
    """SEVERE console entries since the last call, except the refused connection to the bank's
    redirect URI, which nothing serves in these tests."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and "127.0.0.1:9100" not in e["message"]]


def field_labelled(driver, label: str):
    """The form control whose <label> reads ``label`` (the Chinese text may come first)."""
    for element in driver.find_elements(By.TAG_NAME, "label"):
        text = " ".join(element.text.split())
        if text == label or text.endswith(" " + label):
            control = driver.find_element(By.ID, element.get_attribute("for"))
            assert control.accessible_name.endswith(label)
            return control
    raise AssertionError(f"no field labelled {label!r} on {driver.current_url}")


def button_named(driver, name: str, within=None):
    """The button whose accessible name is ``name`` (or ends with it, after the Chinese)."""
    scope = within or driver
    for element in scope.find_elements(By.CSS_SELECTOR, "button, input[type=submit]"):
        accessible = " ".join(element.accessible_name.split())
        if accessible == name or accessible.endswith(" " + name):
            return element
    raise AssertionError(f"no button named {name!r} on {driver.current_url}")


def path_is(path: str):
    return lambda driver: urlsplit(driver.current_url).path == path


def wait(driver, condition, message: str):
    """Wait for a condition; elements going stale mid-check (a page reloading) mean "not yet"."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(condition, message)


# -- the bank ------------------------------------------------------------------------------------

def bank_of(live) -> Requester:
    return Requester(live.base, BANK, private_jwks(BANK), BANK_REDIRECT)


def push(bank: Requester, state: str) -> tuple[str, str]:
    resp, verifier = bank.push(DETAIL, state=state)
    assert resp.status_code == 201, resp.text
    return bank.authorize_url(resp.json()["request_uri"]), verifier


# -- the journeys ----------------------------------------------------------------------------------

def log_in(driver, hkid: str = HKID) -> None:
    """On the login page: HKID, Log in, the demo code, Verify."""
    wait(driver, path_is("/login"), "the browser was not sent to the login page")
    field_labelled(driver, "HKID").send_keys(hkid)
    button_named(driver, "Log in").click()
    wait(driver, path_is("/login/code"), "Log in did not lead to the code page")
    code = driver.find_element(By.ID, "demo-code").text.strip()
    assert re.fullmatch(r"\d{6}", code), code
    field_labelled(driver, "Code").send_keys(code)
    button_named(driver, "Verify").click()


def approve_in_browser(driver, live, bank: Requester, state: str = "browser-state") -> tuple[dict, str]:
    """Push, log in, check the consent screen, Approve; answer the callback query and verifier."""
    url, verifier = push(bank, state)
    driver.get(url)
    log_in(driver)
    wait(driver, path_is("/oauth/authorize"), "Verify did not lead to the consent screen")
    assert driver.find_element(By.ID, "requester-name").text == "Bank of Example"
    assert driver.find_element(By.ID, "purpose").text == "Open a bank account remotely"
    shown = driver.find_element(By.TAG_NAME, "main").text
    for value in ("CHAN, Tai Man", HKID, "1985-03-14", "Sham Shui Po"):
        assert value in shown, value
    assert button_named(driver, "Decline").is_displayed()
    assert console_errors(driver) == []
    button_named(driver, "Approve").click()
    wait(driver, lambda d: d.current_url.startswith(BANK_REDIRECT),
         "Approve did not send the browser to the bank's redirect_uri")
    landed = driver.current_url
    assert landed.startswith(BANK_REDIRECT + "?"), landed
    query = {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}
    assert set(query) == {"code", "state", "iss"}, query
    assert query["state"] == state and query["iss"] == live.base and query["code"]
    return query, verifier


def test_citizen_approves_in_the_browser_and_the_bank_reads(live_gateway, chromium):
    browser = chromium()
    bank = bank_of(live_gateway)
    query, verifier = approve_in_browser(browser, live_gateway, bank)
    resp = bank.token(query["code"], verifier)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    resp = bank.data(tokens["access_token"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"]["identity.name_en"]["value"] == "CHAN, Tai Man"


def test_citizen_revokes_on_me_and_the_next_read_is_refused(live_gateway, chromium):
    browser = chromium()
    bank = bank_of(live_gateway)
    query, verifier = approve_in_browser(browser, live_gateway, bank)
    tokens = bank.token(query["code"], verifier).json()
    consent_id = tokens["consent_id"]
    assert bank.data(tokens["access_token"]).status_code == 200

    browser.get(live_gateway.url("/me"))
    wait(browser, path_is("/me"), "/me did not open for the signed-in citizen")
    card = browser.find_element(By.CSS_SELECTOR, f'[data-consent-id="{consent_id}"]')
    assert "Bank of Example" in card.text and "Open a bank account remotely" in card.text
    assert console_errors(browser) == []
    button_named(browser, "Revoke", within=card).click()
    try:                                           # a confirmation step, if any (SPEC 6)
        browser.switch_to.alert.accept()
    except NoAlertPresentException:
        pass
    try:  # the page may already be reloading after the POST: its buttons go stale, or
        # Chromium answers "Frame is detached" for the page being replaced
        confirm = [b for b in browser.find_elements(By.CSS_SELECTOR, "button")
                   if b.accessible_name.strip() == "Confirm"]
        if confirm:
            confirm[0].click()
    except WebDriverException:   # StaleElementReferenceException among them
        pass

    def shows_revoked(driver):
        cards = driver.find_elements(By.CSS_SELECTOR, f'[data-consent-id="{consent_id}"]')
        return cards and cards[0].find_elements(By.CSS_SELECTOR, '[data-status="revoked"]')

    wait(browser, shows_revoked, "/me does not show the consent as revoked")
    card = browser.find_element(By.CSS_SELECTOR, f'[data-consent-id="{consent_id}"]')
    assert "Revoked" in card.text
    assert not [b for b in card.find_elements(By.TAG_NAME, "button")
                if b.accessible_name.strip().endswith("Revoke")]
    assert console_errors(browser) == []

    resp = bank.data(tokens["access_token"])
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def assert_no_inline_script(driver) -> None:
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert all(s.get_attribute("src") for s in scripts), "inline <script> on the page"
    handlers = driver.execute_script(
        "return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]"
        ".filter(a => a.name.startsWith('on') || a.value.trim().toLowerCase()"
        ".startsWith('javascript:')).map(a => e.tagName + ' ' + a.name));")
    assert handlers == [], handlers


def assert_consent_screen_in_chinese(driver) -> None:
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-HK"
    assert driver.find_element(By.ID, "requester-name").text == "示例銀行"
    assert driver.find_element(By.ID, "purpose").text == "遙距開立銀行戶口"
    shown = driver.find_element(By.TAG_NAME, "main").text
    assert "是否分享你的資料" in shown and "CHAN, Tai Man" in shown
    button_named(driver, "Approve")           # the contract's names stay, Chinese beside them
    button_named(driver, "Decline")


def test_consent_screen_in_traditional_chinese_without_inline_script(live_gateway, chromium):
    browser = chromium()
    bank = bank_of(live_gateway)
    url, _ = push(bank, "zh-state")
    browser.get(url)
    log_in(browser)
    wait(browser, path_is("/oauth/authorize"), "Verify did not lead to the consent screen")
    browser.get(url + "&lang=zh-HK")
    wait(browser, path_is("/oauth/authorize"), "the consent screen did not open again")
    assert_consent_screen_in_chinese(browser)
    assert_no_inline_script(browser)
    assert console_errors(browser) == []

    # The same page over plain HTTP, with the browser's session: the headers.
    http = requests.Session()
    for cookie in browser.get_cookies():
        http.cookies.set(cookie["name"], cookie["value"], path=cookie.get("path", "/"))
    resp = http.get(url + "&lang=zh-HK", timeout=10, allow_redirects=False)
    assert resp.status_code == 200 and "示例銀行" in resp.text
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in
           resp.headers["Content-Security-Policy"].split(";") if d.strip()}
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["object-src"] == "object-src 'none'" and csp["base-uri"] == "base-uri 'none'"
    assert "'unsafe-inline'" not in csp.get("script-src", csp.get("default-src", ""))
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "no-store" in resp.headers["Cache-Control"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", resp.text, re.I)


def test_language_asked_before_login_is_remembered_through_it(live_gateway, chromium):
    """A requester sends a Chinese-speaking citizen to the authorize URL with ?lang=zh-HK: the
    login, code and consent pages all come in Traditional Chinese (SPEC 3: remembered for
    the session)."""
    browser = chromium()
    url, _ = push(bank_of(live_gateway), "zh-login")
    browser.get(url + "&lang=zh-HK")
    wait(browser, path_is("/login"), "the browser was not sent to the login page")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-HK", \
        "the login page forgot ?lang=zh-HK given on the authorize URL"
    assert "智方便" in browser.find_element(By.TAG_NAME, "h1").text
    log_in(browser)
    wait(browser, path_is("/oauth/authorize"), "Verify did not lead to the consent screen")
    assert_consent_screen_in_chinese(browser)
    assert console_errors(browser) == []


def test_citizen_unticks_an_optional_item_and_it_is_not_shared(live_gateway, chromium):
    """On the consent screen an optional item has a checkbox named by its label; unticking it
    keeps it out of the consent, the token and every read."""
    browser = chromium()
    bank = bank_of(live_gateway)
    detail = {**DETAIL, "data_items": [*DETAIL["data_items"], "contact.mobile"]}
    resp, verifier = bank.push(detail, state="untick")
    assert resp.status_code == 201, resp.text
    browser.get(bank.authorize_url(resp.json()["request_uri"]))
    log_in(browser)
    wait(browser, path_is("/oauth/authorize"), "Verify did not lead to the consent screen")
    assert "+852 9123 4567" in browser.find_element(By.TAG_NAME, "main").text
    boxes = {b.accessible_name.strip(): b
             for b in browser.find_elements(By.CSS_SELECTOR, 'input[type="checkbox"]')}
    assert set(boxes) == {"Mobile number"}       # required items have none
    boxes["Mobile number"].click()
    assert not boxes["Mobile number"].is_selected()
    button_named(browser, "Approve").click()
    wait(browser, lambda d: d.current_url.startswith(BANK_REDIRECT),
         "Approve did not send the browser to the bank's redirect_uri")
    code = parse_qs(urlsplit(browser.current_url).query)["code"][0]
    tokens = bank.token(code, verifier).json()
    assert "contact.mobile" not in tokens["authorization_details"][0]["data_items"]
    assert "contact.mobile" not in bank.data(tokens["access_token"]).json()["items"]
    assert console_errors(browser) == []
