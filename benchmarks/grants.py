"""Consents obtained over HTTP, as a requester and a citizen obtain them (gateway.demo.agent,
the same sequence as gateway/demo/story.py): PAR → login → approve → code → token.

Access tokens live 10 minutes and codes 60 seconds, so both are made right before they are
used: ``TokenSupply`` re-mints tokens that are getting old, and codes come in batches.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from gateway.demo.agent import Citizen, Requester
from gateway.demo.seed import demo_requesters, private_jwks

BANK = "bank-of-example"
HKID = "A123456(3)"
ONGOING_DETAIL = {"type": "cdeg_data", "purpose": "ekyc-account-opening", "access": "ongoing",
                  "duration": "P90D",
                  "data_items": ["identity.name_en", "identity.hkid", "identity.date_of_birth",
                                 "address.residential", "address.proof"]}


class GrantFailed(Exception):
    """The gateway refused a step of the grant; the message quotes its answer."""


@dataclass(frozen=True)
class ApprovedCode:
    code: str
    verifier: str
    approved_at: float


def bank(base_url: str) -> Requester:
    entry = next(r for r in demo_requesters() if r["client_id"] == BANK)
    return Requester(base_url, BANK, private_jwks(BANK), entry["redirect_uris"][0])


def approved_code(requester: Requester, citizen: Citizen) -> ApprovedCode:
    resp, verifier = requester.push(ONGOING_DETAIL)
    if resp.status_code != 201:
        raise GrantFailed(f"PAR answered {resp.status_code}: {resp.text[:300]}")
    page = citizen.open(requester.authorize_url(resp.json()["request_uri"]))
    if page.status_code != 200 or "Approve" not in page.text:
        raise GrantFailed(f"consent screen answered {page.status_code}: {page.text[:300]}")
    answer = citizen.decide(page, "approve")
    if "code" not in answer:
        raise GrantFailed(f"approval answered no code: {answer}")
    return ApprovedCode(answer["code"], verifier, time.monotonic())


def check_token(base_url: str, token: str) -> None:
    resp = requests.get(base_url + "/api/v1/data", timeout=10,
                        headers={"Authorization": f"Bearer {token}"})
    if resp.status_code != 200:
        raise GrantFailed(f"GET /api/v1/data answered {resp.status_code}: {resp.text[:300]}")


class Agent:
    """The bank and the demo citizen, each with its own HTTP session; the citizen logs in once
    (on the first consent screen) and stays logged in, which keeps clear of the login throttle."""

    def __init__(self, base_url: str):
        self.requester, self.citizen = bank(base_url), Citizen(base_url, HKID)

    def approved_code(self) -> ApprovedCode:
        return approved_code(self.requester, self.citizen)

    def access_token(self) -> str:
        pending = self.approved_code()
        resp = self.requester.token(pending.code, pending.verifier)
        if resp.status_code != 200:
            raise GrantFailed(f"token answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["access_token"]


class TokenSupply:
    """Access tokens for distinct ongoing consents of the demo citizen, written one per line
    to ``path`` for wrk; re-minted when older than ``max_age`` seconds (they live 600)."""

    def __init__(self, base_url: str, count: int, path: Path, max_age: float = 300.0):
        self.base_url, self.count, self.path, self.max_age = base_url, count, path, max_age
        self.agent = Agent(base_url)
        self.tokens: list[str] = []
        self.minted_at = 0.0

    def fresh(self) -> list[str]:
        if not self.tokens or time.monotonic() - self.minted_at > self.max_age:
            self.mint()
        return self.tokens

    def mint(self) -> None:
        tokens = [self.agent.access_token() for _ in range(self.count)]
        for token in tokens:
            check_token(self.base_url, token)
        self.tokens, self.minted_at = tokens, time.monotonic()
        self.path.write_text("\n".join(tokens) + "\n")


class CodeMinter:
    """Batches of approved authorization codes, made by ``parallel`` agents at once."""

    def __init__(self, base_url: str, parallel: int = 4):
        self.base_url = base_url
        self.agents = [Agent(base_url) for _ in range(parallel)]

    def batch(self, count: int) -> list[ApprovedCode]:
        shares = [count // len(self.agents) + (1 if i < count % len(self.agents) else 0)
                  for i in range(len(self.agents))]

        def mint(agent: Agent, share: int) -> list[ApprovedCode]:
            return [agent.approved_code() for _ in range(share)]

        with ThreadPoolExecutor(len(self.agents)) as pool:
            batches = list(pool.map(mint, self.agents, shares))
        return [code for batch in batches for code in batch]

    def exchange_forms(self, codes: list[ApprovedCode]) -> list[dict]:
        """The token requests for ``codes``, client assertions included, built before the
        timed part so the load driver only sends them."""
        requester = self.agents[0].requester
        return [{"grant_type": "authorization_code", "code": c.code,
                 "redirect_uri": requester.redirect_uri, "code_verifier": c.verifier,
                 **requester.auth()} for c in codes]
