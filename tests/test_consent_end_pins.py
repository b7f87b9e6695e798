"""Pins on what ending a consent means: a consent revoked while its data is being fetched
releases nothing, ending a consent (revoked, expired by a sweep) revokes its tokens, and a PAR
asks for one purpose only."""
from __future__ import annotations

import json

from sqlalchemy import select

from gateway.store.db import audit_entries, tokens as token_rows

from .flow import BANK_DETAIL, ledger_snapshot


def _token_rows(gw, consent_id: str) -> list[dict]:
    with gw.db.connect() as conn:
        return [dict(r) for r in conn.execute(select(token_rows).where(
            token_rows.c.consent_id == consent_id)).mappings()]


def _events(gw, consent_id: str) -> list[str]:
    with gw.db.connect() as conn:
        return list(conn.execute(select(audit_entries.c.event)
                                 .where(audit_entries.c.consent_id == consent_id)
                                 .order_by(audit_entries.c.id)).scalars())


def test_consent_revoked_while_its_data_is_fetched_releases_nothing(flow, monkeypatch):
    tokens = flow.tokens()
    fetch = flow.gw.router.fetch

    def fetch_then_revoked(hkid, items):
        values = fetch(hkid, items)               # the sources answered...
        assert flow.revoke_as_citizen(tokens["consent_id"]).status_code == 303
        return values                             # ...but the citizen revoked meanwhile

    monkeypatch.setattr(flow.gw.router, "fetch", fetch_then_revoked)
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 401, resp.get_json()
    assert "data.released" not in _events(flow.gw, tokens["consent_id"])


def test_revoking_a_consent_revokes_every_token_it_had(flow):
    tokens = flow.tokens()
    assert all(r["revoked_at"] is None for r in _token_rows(flow.gw, tokens["consent_id"]))
    flow.revoke_as_citizen(tokens["consent_id"])
    rows = _token_rows(flow.gw, tokens["consent_id"])
    assert {r["kind"] for r in rows} == {"access", "refresh"}
    assert all(r["revoked_at"] is not None for r in rows)


def test_a_consent_expired_by_the_sweep_has_its_tokens_revoked(flow, clock):
    from gateway.jobs.sweeps import expire_consents
    tokens = flow.tokens()
    clock.advance(91 * 86400)
    assert expire_consents(flow.gw) == 1
    assert all(r["revoked_at"] is not None for r in _token_rows(flow.gw, tokens["consent_id"]))


def test_par_with_two_authorization_details_entries_is_refused(flow):
    before = ledger_snapshot(flow.gw)
    second = {**BANK_DETAIL, "purpose": "ekyc-account-opening", "access": "once"}
    second.pop("duration")
    resp = flow.par(authorization_details=json.dumps([BANK_DETAIL, second]))
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_authorization_details" and "one" in body["error_description"]
    assert ledger_snapshot(flow.gw) == before
