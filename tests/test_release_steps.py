"""A release in the steps every route takes: live_grant, decide (pure), fetch, record (once
per idempotency key) — what the data API does today and form prefill and CDI jobs will do."""
from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from gateway.audit import sequencer
from gateway.clock import Clock
from gateway.errors import InvalidToken, KeyReused, OutsideConsent
from gateway.exchange import release
from gateway.store.db import audit_entries

from .flow import ONCE_DETAIL
from .statements import statements_sent

NOW = 1_800_000_000
POLICY = {"purposes": {"ekyc-account-opening": {
    "items": {"required": ["identity.name_en", "identity.hkid"], "optional": ["contact.email"]},
    "access": ["once", "ongoing"], "max_duration": "P1Y"}}}
GRANT = release.Grant(token_id="jti-1", consent_id="cns_" + "a" * 24, client_id="bank",
                      subject_id="s1", subject="pairwise", hkid="A1234563", status="approved",
                      purpose="ekyc-account-opening",
                      data_items=("identity.name_en", "identity.hkid", "address.residential"),
                      access="ongoing", expires_at=NOW + 3600, decided_at=NOW - 60, policy=POLICY)


def _released(gw, consent_id: str) -> int:
    with gw.db.connect() as conn:
        return len(conn.execute(select(audit_entries.c.id).where(
            audit_entries.c.consent_id == consent_id,
            audit_entries.c.event == "data.released")).all())


def test_decide_releases_consented_and_allowed_items_only():
    # address.residential is consented but the policy no longer allows it
    assert release.decide(GRANT, None, NOW) == ["identity.name_en", "identity.hkid"]
    assert release.decide(GRANT, ["identity.hkid"], NOW) == ["identity.hkid"]


def test_decide_refuses_items_outside_the_consent_naming_them():
    with pytest.raises(OutsideConsent) as refused:
        release.decide(GRANT, ["identity.hkid", "contact.email"], NOW)
    assert refused.value.errors == {"items": ["contact.email: not within the consent"]}
    with pytest.raises(OutsideConsent):   # consented, but the policy withdrew it
        release.decide(GRANT, ["address.residential"], NOW)


@pytest.mark.parametrize("change", [{"status": "revoked"}, {"status": "requested"},
                                    {"expires_at": NOW}, {"expires_at": None}])
def test_decide_refuses_a_consent_that_is_not_live(change):
    with pytest.raises(InvalidToken):
        release.decide(replace(GRANT, **change), None, NOW)


def test_decide_refuses_a_kind_the_policy_no_longer_allows():
    narrowed = {"purposes": {"ekyc-account-opening": {
        **POLICY["purposes"]["ekyc-account-opening"], "access": ["once"]}}}
    with pytest.raises(InvalidToken, match="ongoing"):
        release.decide(replace(GRANT, policy=narrowed), None, NOW)


def test_a_keyed_record_writes_its_release_once(flow):
    tokens = flow.tokens()
    gw = flow.gw
    grant = release.live_grant(gw, gw.access_tokens.verify(tokens["access_token"]))
    items = release.decide(grant, None, gw.clock.now())
    assert not release.already_recorded(gw, grant, "cdi-query-1")
    assert release.record(gw, grant, items, route="cdi", key="cdi-query-1").first
    assert release.already_recorded(gw, grant, "cdi-query-1")
    assert not release.record(gw, grant, items, route="cdi", key="cdi-query-1").first
    assert _released(gw, grant.consent_id) == 1


def test_a_key_used_for_one_consent_is_refused_for_another_and_records_nothing(flow):
    gw = flow.gw
    first, second = (release.live_grant(gw, gw.access_tokens.verify(flow.tokens()["access_token"]))
                     for _ in range(2))
    release.record(gw, first, ["identity.hkid"], route="cdi", key="q-7")
    with pytest.raises(KeyReused):
        release.record(gw, second, ["identity.hkid"], route="cdi", key="q-7")
    assert _released(gw, second.consent_id) == 0


def test_one_requesters_key_never_meets_anothers(flow):
    gw = flow.gw
    grant = release.live_grant(gw, gw.access_tokens.verify(flow.tokens()["access_token"]))
    other = replace(grant, client_id="transport-department")
    release.record(gw, grant, ["identity.hkid"], route="cdi", key="q-1")
    assert not release.already_recorded(gw, other, "q-1")


def test_a_repeated_key_after_revocation_is_refused_not_answered(flow):
    tokens = flow.tokens()
    gw = flow.gw
    grant = release.live_grant(gw, gw.access_tokens.verify(tokens["access_token"]))
    release.record(gw, grant, ["identity.hkid"], route="cdi", key="q-9")
    flow.revoke_as_citizen(tokens["consent_id"])
    with pytest.raises(InvalidToken):
        release.record(gw, grant, ["identity.hkid"], route="cdi", key="q-9")


def test_a_grant_never_shows_the_hkid_in_its_repr():
    assert GRANT.hkid not in repr(GRANT)


def test_the_grant_knows_the_citizen_by_the_same_pairwise_subject_as_the_token(flow):
    tokens = flow.tokens()
    claims = flow.gw.access_tokens.verify(tokens["access_token"])
    assert release.live_grant(flow.gw, claims).subject == claims["sub"]


def test_recording_a_once_consent_ends_it_and_a_second_record_is_refused(flow):
    tokens = flow.tokens(ONCE_DETAIL)
    gw = flow.gw
    grant = release.live_grant(gw, gw.access_tokens.verify(tokens["access_token"]))
    items = release.decide(grant, None, gw.clock.now())
    release.record(gw, grant, items, route="api")
    with pytest.raises(InvalidToken):   # the consent ended with its one read
        release.record(gw, grant, items, route="api")
    assert _released(gw, grant.consent_id) == 1


def test_a_consent_revoked_after_decide_releases_nothing_at_record(flow):
    tokens = flow.tokens()
    gw = flow.gw
    grant = release.live_grant(gw, gw.access_tokens.verify(tokens["access_token"]))
    items = release.decide(grant, None, gw.clock.now())
    flow.revoke_as_citizen(tokens["consent_id"])
    with pytest.raises(InvalidToken):
        release.record(gw, grant, items, route="api")
    with pytest.raises(InvalidToken):
        release.record(gw, grant, items, route="cdi", key="after-revoke")
    assert _released(gw, grant.consent_id) == 0
    assert not release.already_recorded(gw, grant, "after-revoke")


# -- the grant cache (PostgreSQL): a repeat call skips the read, never the checks -------------

def _sources_asked(gw, monkeypatch) -> list[str]:
    asked: list[str] = []
    fetch = gw.router.fetch

    def counted(hkid, items):
        asked.append(",".join(items))
        return fetch(hkid, items)
    monkeypatch.setattr(gw.router, "fetch", counted)
    return asked


def test_a_repeat_call_with_the_same_token_skips_the_read_but_not_the_write(pg_flow, monkeypatch):
    tokens = pg_flow.tokens()
    monkeypatch.setattr(sequencer, "after_commit", lambda gw: None)   # the call's own statements
    with statements_sent(pg_flow.gw, monkeypatch) as first:
        assert pg_flow.data(tokens["access_token"]).status_code == 200
    with statements_sent(pg_flow.gw, monkeypatch) as repeat:
        assert pg_flow.data(tokens["access_token"]).status_code == 200
    assert any(s.startswith("select") and "from tokens join consents" in s for s in first)
    assert len(repeat) == 1 and "insert into audit_entries" in repeat[0] \
        and "revoked_at is null" in repeat[0] and "md5(policy::text)" in repeat[0]
    assert _released(pg_flow.gw, tokens["consent_id"]) == 2


def test_a_cached_grant_of_a_revoked_consent_releases_nothing_and_says_why(pg_flow, monkeypatch):
    tokens = pg_flow.tokens()
    assert pg_flow.data(tokens["access_token"]).status_code == 200   # the grant is cached
    pg_flow.revoke_as_citizen(tokens["consent_id"])
    asked = _sources_asked(pg_flow.gw, monkeypatch)
    for _ in range(2):
        refused = pg_flow.data(tokens["access_token"])
        assert refused.status_code == 401
        assert "revoked" in refused.get_json()["detail"]
    assert _released(pg_flow.gw, tokens["consent_id"]) == 1
    # the stale grant cost one lookup whose answer was dropped; the next call, none
    assert len(asked) == 1


def test_the_grant_cache_forgets_a_grant_when_its_token_expires_and_stays_bounded():
    clock = Clock()
    now = clock.now()
    cache = release.GrantCache(clock, size=8)
    cache.keep({"jti": "t0", "exp": now + 60}, GRANT)
    assert cache.get({"jti": "t0"}) is GRANT
    clock.advance(60)
    assert cache.get({"jti": "t0"}) is None
    for i in range(20):
        cache.keep({"jti": f"t{i}", "exp": now + 600}, GRANT)
    assert len(cache._grants) <= 8 and cache.get({"jti": "t19"}) is GRANT
