"""Redirect URIs: checked at registration, and never pasted raw into the consent page's CSP
(security review, issue 5, item 13)."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from gateway import requester_registry
from gateway.store.db import requesters

# The review's case first: a netloc that would end form-action and add directives.
INJECTING = "https://a.example;report-uri https://evil.example/r;sandbox;/cb"

BAD = [
    INJECTING,
    "https://a.example;sandbox;/cb",
    "https://a.example,evil.example/cb",
    "https://a.example'/cb",
    'https://a"b.example/cb',
    "https://a .example/cb",
    "https://a.example/c b",
    "https://a.example\n/cb",
    "https://a.example\\@evil.example/cb",
    "https://bänk.example/cb",
    "https://user@a.example/cb",
    "https://user:pw@a.example/cb",
    "https://a.example/cb#frag",
    "https://a.example/cb#",
    "http://a.example/cb",
    "http://127.0.0.2/cb",
    "ftp://a.example/cb",
    "javascript:alert(1)",
    "/cb",
    "a.example/cb",
    "https:///cb",
    "https://:443/cb",
    "https://a.example:/cb",
    "https://a.example:0/cb",
    "https://a.example:99999/cb",
    "https://a.example:44x/cb",
    "https://a.example:443:1/cb",
    "https://exa_mple.com/cb",
    "https://-a.example/cb",
    "https://a..example/cb",
    "https://a.example./cb",
    "https://a.123/cb",
    "https://1.2.3/cb",
    "https://256.1.1.1/cb",
    "https://[zz::1]/cb",
    "https://[fe80::1%25eth0]/cb",
    "https://[::1/cb",
    "https://a.example/cb%zz",
    "",
]


@pytest.mark.parametrize("uri", BAD)
def test_registration_refuses_a_malformed_redirect_uri_with_a_one_line_reason_naming_it(uri):
    with pytest.raises(requester_registry.RequesterError) as refused:
        requester_registry.check_redirect_uri(uri, demo=True)
    reason = str(refused.value)
    assert "\n" not in reason and "\r" not in reason
    assert reason.startswith(f"redirect URI {uri!r}: "), reason


GOOD = [
    ("https://bank.example/callback", "https://bank.example"),
    ("https://Bank.Example:8443/cb?x=1&y=2", "https://bank.example:8443"),
    ("HTTPS://bank.example/cb", "https://bank.example"),
    ("https://[2001:DB8::1]/cb", "https://[2001:db8::1]"),
    ("https://192.0.2.1:9443/cb", "https://192.0.2.1:9443"),
    ("https://xn--bnk-qla.example/cb;v=1", "https://xn--bnk-qla.example"),
    ("https://bank.example", "https://bank.example"),
]


@pytest.mark.parametrize("uri, origin", GOOD)
def test_a_good_https_redirect_uri_is_accepted_and_its_origin_rebuilt_from_its_parts(uri, origin):
    assert requester_registry.check_redirect_uri(uri, demo=False) == uri    # stored as given
    assert requester_registry.csp_origin(uri) == origin


LOOPBACK = ["http://127.0.0.1:9100/callback", "http://localhost:9000/cb", "http://[::1]:9000/cb",
            "http://LOCALHOST/cb"]


@pytest.mark.parametrize("uri", LOOPBACK)
def test_http_on_a_loopback_host_is_accepted_in_demo_mode(uri):
    assert requester_registry.check_redirect_uri(uri, demo=True) == uri


@pytest.mark.parametrize("uri", LOOPBACK)
def test_http_on_a_loopback_host_is_refused_in_production(uri):
    with pytest.raises(requester_registry.RequesterError, match="demo mode only"):
        requester_registry.check_redirect_uri(uri, demo=False)


def test_register_refuses_http_loopback_unless_told_it_is_demo_mode(gw):
    with gw.transaction() as conn:
        row = requester_registry.get(conn, "bank-of-example")
    args = dict(client_id="bank-of-example", name=row["name"], jwks=row["jwks"], kind=row["kind"],
                policy=row["policy"], redirect_uris=["http://127.0.0.1:9100/callback"])
    with gw.transaction() as conn, pytest.raises(requester_registry.RequesterError, match="demo mode only"):
        requester_registry.register(conn, 0, **args)
    with gw.transaction() as conn:
        requester_registry.register(conn, 0, demo=True, **args)


@pytest.mark.parametrize("uri", [INJECTING, "https://a.example,script-src *"])
def test_csp_origin_is_none_for_a_uri_that_is_not_a_clean_origin(uri):
    assert requester_registry.csp_origin(uri) is None


def _directives(csp: str) -> dict:
    return {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}


CSP_DIRECTIVES = {"default-src", "script-src", "style-src", "img-src", "form-action",
                  "frame-ancestors", "object-src", "base-uri"}


@pytest.mark.parametrize("crafted", [INJECTING, "https://a.example, default-src *"])
def test_a_crafted_redirect_uri_stored_before_the_fix_injects_nothing_into_the_csp(flow, crafted):
    # An old registration, written straight into the table as if never validated.
    with flow.gw.transaction() as conn:
        conn.execute(update(requesters).where(requesters.c.client_id == flow.client_id)
                     .values(redirect_uris=[crafted, flow.redirect_uri]))
    resp = flow.par(redirect_uri=crafted)
    assert resp.status_code == 201, resp.get_json()
    flow.login()
    page = flow.consent_page(resp.get_json()["request_uri"])
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "," not in csp                                   # one policy, not two
    directives = _directives(csp)
    assert set(directives) == CSP_DIRECTIVES, csp
    assert directives["form-action"] == "form-action 'self'"
    for injected in ("report-uri", "sandbox", "evil.example", "a.example", "*"):
        assert injected not in csp, csp


def test_consent_page_names_the_https_redirect_origin_in_form_action(flow):
    resp = flow.par(redirect_uri="https://bank.example/callback")   # registered by the seed
    assert resp.status_code == 201, resp.get_json()
    flow.login()
    csp = flow.consent_page(resp.get_json()["request_uri"]).headers["Content-Security-Policy"]
    assert _directives(csp)["form-action"] == "form-action 'self' https://bank.example"


def test_the_csp_keeps_form_action_self_when_a_view_offers_anything_but_a_clean_origin(
        embedded_app):
    # Defence in depth at the header itself: whatever a view puts in g.form_action_extra.
    from flask import g

    offered = {"/crafted": "https://a.example; sandbox", "/comma": "https://a.example, *",
               "/keyword": "'unsafe-inline'", "/clean": "https://bank.example:8443"}

    def view():
        from flask import request
        g.form_action_extra = offered[request.path]
        return "ok"
    for path in offered:
        embedded_app.add_url_rule(path, path, view)
    client = embedded_app.test_client()
    for path in ("/crafted", "/comma", "/keyword"):
        csp = client.get(path).headers["Content-Security-Policy"]
        assert _directives(csp)["form-action"] == "form-action 'self'", csp
        assert set(_directives(csp)) == CSP_DIRECTIVES and "," not in csp
    csp = client.get("/clean").headers["Content-Security-Policy"]
    assert _directives(csp)["form-action"] == "form-action 'self' https://bank.example:8443"
