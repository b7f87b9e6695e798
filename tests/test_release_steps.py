"""A release in the steps every route takes: live_grant, decide (pure), fetch, record (once
per idempotency key) — what the data API does today and form prefill and CDI jobs will do."""
from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from gateway.errors import InvalidToken, KeyReused, OutsideConsent
from gateway.exchange import release
from gateway.store.db import audit_entries

from .flow import ONCE_DETAIL

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
