"""The grant driven through Flask's test client, step by step, as a requester and a citizen
would drive it. Each step answers the raw response so tests can check refusals too."""
from __future__ import annotations

import functools
import html
import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit

from jwcrypto import jwk

from gateway.demo.agent import ASSERTION_TYPE, client_assertion, pkce_pair
from gateway.demo.seed import demo_requesters, private_jwks

BANK = "bank-of-example"
TD = "transport-department"
HKID = "A123456(3)"
BANK_DETAIL = {"type": "cdeg_data", "purpose": "ekyc-account-opening", "access": "ongoing",
               "duration": "P90D",
               "data_items": ["identity.name_en", "identity.hkid", "identity.date_of_birth",
                              "address.residential"]}
ONCE_DETAIL = {**{k: v for k, v in BANK_DETAIL.items() if k != "duration"}, "access": "once"}


@functools.cache
def _redirect_uri(client_id: str) -> str:
    return next(r for r in demo_requesters() if r["client_id"] == client_id)["redirect_uris"][0]


@functools.cache
def _private_key(client_id: str) -> str:
    return json.dumps(private_jwks(client_id)["keys"][0])


def redirect_uri_of(client_id: str) -> str:
    """The demo requester's first redirect URI (requesters.yaml is read once a session)."""
    return _redirect_uri(client_id)


def key_of(client_id: str) -> jwk.JWK:
    """The demo requester's private key: its file is read once a session, each caller gets a
    JWK of its own."""
    return jwk.JWK(**json.loads(_private_key(client_id)))


class Flow:
    def __init__(self, app, client_id: str = BANK):
        self.app = app
        self.gw = app.extensions["cdeg"]
        self.issuer = self.gw.config.issuer
        self.client_id = client_id
        self.key = key_of(client_id)
        self.redirect_uri = redirect_uri_of(client_id)
        self.requester = app.test_client()       # the requester's back end
        self.browser = app.test_client()         # the citizen's browser (keeps cookies)
        self.verifier = None

    # -- requester -------------------------------------------------------------------------
    def assertion(self, **overrides) -> str:
        now = self.gw.clock.now()  # the gateway's clock, which tests may move
        overrides = {"iat": now, "exp": now + 60, **overrides}
        return client_assertion(self.key, self.client_id, self.issuer, **overrides)

    def auth(self, **overrides) -> dict:
        return {"client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(**overrides)}

    def par_form(self, detail: dict | None = None, **changes) -> dict:
        self.verifier, challenge = pkce_pair()
        form = {"response_type": "code", "client_id": self.client_id,
                "redirect_uri": self.redirect_uri, "state": "st-123",
                "code_challenge": challenge, "code_challenge_method": "S256",
                "authorization_details": json.dumps([detail or BANK_DETAIL]), **self.auth()}
        form.update(changes)
        return {k: v for k, v in form.items() if v is not None}

    def par(self, detail: dict | None = None, **changes):
        return self.requester.post("/oauth/par", data=self.par_form(detail, **changes))

    def token(self, code: str, verifier: str | None = None, **changes):
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri, "code_verifier": verifier or self.verifier,
                **self.auth()}
        form.update(changes)
        return self.requester.post("/oauth/token", data={k: v for k, v in form.items()
                                                          if v is not None})

    def data(self, access_token: str, items: str | None = None, accept="application/json"):
        url = "/api/v1/data" + ("?" + urlencode({"items": items}) if items else "")
        return self.requester.get(url, headers={"Authorization": f"Bearer {access_token}",
                                                "Accept": accept})

    # -- citizen ---------------------------------------------------------------------------
    @staticmethod
    def csrf(page: str) -> str:
        return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))

    def login(self, hkid: str = HKID, next_url: str = "/me"):
        page = self.browser.get("/login?" + urlencode({"next": next_url})).get_data(as_text=True)
        resp = self.browser.post("/login", data={"csrf_token": self.csrf(page), "hkid": hkid,
                                                 "next": next_url})
        if resp.status_code != 303:
            return resp
        page = self.browser.get(resp.headers["Location"]).get_data(as_text=True)
        code = re.search(r'id="demo-code">(\d{6})<', page).group(1)
        return self.browser.post("/login/code", data={"csrf_token": self.csrf(page), "code": code})

    def consent_page(self, request_uri: str):
        return self.browser.get("/oauth/authorize?" + urlencode(
            {"client_id": self.client_id, "request_uri": request_uri}))

    def decide(self, request_uri: str, decision: str = "approve"):
        page = self.consent_page(request_uri)
        assert page.status_code == 200, page.get_data(as_text=True)
        return self.browser.post("/oauth/authorize", data={
            "csrf_token": self.csrf(page.get_data(as_text=True)), "client_id": self.client_id,
            "request_uri": request_uri, "decision": decision})

    @staticmethod
    def query(resp) -> dict:
        return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}

    # -- whole paths -----------------------------------------------------------------------
    def approved_code(self, detail: dict | None = None) -> str:
        resp = self.par(detail)
        assert resp.status_code == 201, resp.get_json()
        self.login()
        answer = self.decide(resp.get_json()["request_uri"])
        assert answer.status_code == 303
        return self.query(answer)["code"]

    def tokens(self, detail: dict | None = None) -> dict:
        resp = self.token(self.approved_code(detail))
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    def revoke_as_citizen(self, consent_id: str):
        page = self.browser.get("/me").get_data(as_text=True)
        return self.browser.post(f"/me/consents/{consent_id}/revoke",
                                 data={"csrf_token": self.csrf(page)})


def ledger_snapshot(gw) -> dict:
    """Row counts and statuses of everything durable: a refused request must not change it."""
    from sqlalchemy import func, select

    from gateway.store.db import (audit_entries, authorization_codes, consents,
                                  pushed_requests, tokens)
    with gw.db.connect() as conn:
        snap = {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in (audit_entries, authorization_codes, consents, pushed_requests, tokens)}
        snap["statuses"] = sorted(conn.execute(select(consents.c.status)).scalars())
        snap["revoked_tokens"] = conn.execute(select(func.count()).select_from(tokens)
                                              .where(tokens.c.revoked_at.is_not(None))).scalar()
    return snap
