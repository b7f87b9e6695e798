"""POST /oauth/token: codes are short-lived, single use, bound to client, redirect and PKCE."""
from __future__ import annotations

import time

import jwt as pyjwt
import pytest

from sqlalchemy import select

from gateway.store.db import authorization_codes

from .forge import dangerous_headers, raw_signed
from .flow import BANK_DETAIL, ONCE_DETAIL, TD, Flow, ledger_snapshot
from .statements import statements_sent


def test_access_token_is_an_rfc9068_jwt_bound_to_the_consent(flow):
    tokens = flow.tokens()
    header = pyjwt.get_unverified_header(tokens["access_token"])
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    assert claims["iss"] == flow.issuer and claims["aud"] == flow.issuer + "/api"
    assert claims["client_id"] == flow.client_id
    assert claims["consent_id"] == tokens["consent_id"]
    assert claims["authorization_details"] == [BANK_DETAIL]
    assert 0 < claims["exp"] - claims["iat"] <= 600 and claims["jti"]
    assert tokens["expires_in"] <= 600


def test_pairwise_subject_differs_between_requesters(app):
    bank, td = Flow(app), Flow(app, TD)
    bank_sub = pyjwt.decode(bank.tokens()["access_token"], options={"verify_signature": False})["sub"]
    detail = {"type": "cdeg_data", "purpose": "vehicle-licence-renewal", "access": "once",
              "data_items": ["identity.name_en", "identity.hkid", "address.residential"]}
    td_sub = pyjwt.decode(td.tokens(detail)["access_token"], options={"verify_signature": False})["sub"]
    assert bank_sub != td_sub and "A123456" not in bank_sub


def test_code_works_once_and_reuse_revokes_what_it_issued(flow):
    code = flow.approved_code()
    first = flow.token(code)
    assert first.status_code == 200
    access = first.get_json()["access_token"]
    assert flow.data(access).status_code == 200
    second = flow.token(code)
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    assert flow.data(access).status_code == 401
    refresh = flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": first.get_json()["refresh_token"],
        **flow.auth()})
    assert refresh.get_json()["error"] == "invalid_grant"
    # the consent itself stays approved
    page = flow.browser.get("/me").get_data(as_text=True)
    assert 'data-status="approved"' in page


def test_expired_code_is_refused(flow, clock):
    code = flow.approved_code()
    clock.advance(61)
    resp = flow.token(code)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


@pytest.mark.parametrize("changes", [
    {"code_verifier": "x" * 43},
    {"code_verifier": None},
    {"code_verifier": "short"},
    {"redirect_uri": "http://127.0.0.1:9100/other"},
    {"code": "not-a-code"},
], ids=["wrong verifier", "missing verifier", "malformed verifier", "other redirect", "unknown code"])
def test_bad_code_exchange_is_refused_and_issues_nothing(flow, changes):
    code = flow.approved_code()
    before = ledger_snapshot(flow.gw)
    changes = dict(changes)
    resp = flow.token(changes.pop("code", code), **changes)
    assert resp.status_code == 400
    assert resp.get_json()["error"] in ("invalid_grant", "invalid_request")
    assert ledger_snapshot(flow.gw) == before


def test_code_of_another_client_is_refused(app):
    bank, td = Flow(app), Flow(app, TD)
    code = bank.approved_code()
    td.verifier = bank.verifier
    resp = td.token(code, redirect_uri=bank.redirect_uri)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_unknown_grant_type_is_refused(flow):
    resp = flow.requester.post("/oauth/token", data={"grant_type": "password", **flow.auth()})
    assert resp.status_code == 400 and resp.get_json()["error"] == "unsupported_grant_type"


def test_refresh_token_rotates_and_the_old_one_dies(flow):
    tokens = flow.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    first = flow.requester.post("/oauth/token", data={**form, **flow.auth()})
    assert first.status_code == 200
    assert first.get_json()["refresh_token"] != tokens["refresh_token"]
    again = flow.requester.post("/oauth/token", data={**form, **flow.auth()})
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"


def test_replayed_refresh_token_revokes_the_whole_family(flow):
    """RFC 9700 4.14.2: a rotated refresh token coming back means a copy was stolen; the
    current refresh token and every access token of the grant die with it."""
    tokens = flow.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    current = flow.requester.post("/oauth/token", data={**form, **flow.auth()}).get_json()
    replay = flow.requester.post("/oauth/token", data={**form, **flow.auth()})
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    after = flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": current["refresh_token"], **flow.auth()})
    assert after.status_code == 400 and after.get_json()["error"] == "invalid_grant"
    assert flow.data(current["access_token"]).status_code == 401
    assert flow.data(tokens["access_token"]).status_code == 401
    active = flow.requester.post("/oauth/introspect", data={
        "token": current["refresh_token"], **flow.auth()}).get_json()
    assert active == {"active": False}


def test_refresh_token_after_its_consent_ended_revokes_nothing_more(flow):
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    before = ledger_snapshot(flow.gw)
    resp = flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **flow.auth()})
    assert resp.status_code == 400 and "ended" in resp.get_json()["error_description"]
    assert ledger_snapshot(flow.gw) == before


def test_once_consent_gets_no_refresh_token_and_ends_at_first_read(flow):
    tokens = flow.tokens(ONCE_DETAIL)
    assert "refresh_token" not in tokens
    assert flow.data(tokens["access_token"]).status_code == 200
    second = flow.data(tokens["access_token"])
    assert second.status_code == 401
    assert 'data-status="expired"' in flow.browser.get("/me").get_data(as_text=True)


def test_refresh_after_revocation_is_refused(flow):
    tokens = flow.tokens()
    flow.revoke_as_citizen(tokens["consent_id"])
    resp = flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **flow.auth()})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_revocation_endpoint_revokes_the_clients_token(flow):
    tokens = flow.tokens()
    resp = flow.requester.post("/oauth/revoke", data={"token": tokens["access_token"], **flow.auth()})
    assert resp.status_code == 200
    assert flow.data(tokens["access_token"]).status_code == 401


def test_revocation_answers_200_for_unknown_tokens(flow):
    resp = flow.requester.post("/oauth/revoke", data={"token": "nonsense", **flow.auth()})
    assert resp.status_code == 200


def test_introspection_tells_active_then_only_inactive(flow, clock):
    tokens = flow.tokens()
    active = flow.requester.post("/oauth/introspect",
                                 data={"token": tokens["access_token"], **flow.auth()}).get_json()
    assert active["active"] is True and active["consent_id"] == tokens["consent_id"]
    flow.revoke_as_citizen(tokens["consent_id"])
    gone = flow.requester.post("/oauth/introspect",
                               data={"token": tokens["access_token"], **flow.auth()}).get_json()
    assert gone == {"active": False}
    unknown = flow.requester.post("/oauth/introspect",
                                  data={"token": "junk", **flow.auth()}).get_json()
    assert unknown == {"active": False}


def _resigned(flow, access_token: str, **header_changes) -> str:
    """The issued token's own header and claims, signed again by the gateway's own key."""
    header = {**pyjwt.get_unverified_header(access_token), **header_changes}
    claims = pyjwt.decode(access_token, options={"verify_signature": False})
    return raw_signed(flow.gw.keyring.signing_key, header, claims)


def _introspect(flow, token: str) -> dict:
    return flow.requester.post("/oauth/introspect", data={"token": token, **flow.auth()}).get_json()


def test_introspection_of_a_properly_signed_token_with_a_forbidden_header_is_inactive(flow):
    """Same claims (a jti the ledger holds), same key and kid; only the header differs."""
    tokens = flow.tokens()
    assert _introspect(flow, _resigned(flow, tokens["access_token"]))["active"] is True  # control
    public = flow.gw.keyring.signing_key.export_public(as_dict=True)
    for name, extra in dangerous_headers(public).items():
        assert _introspect(flow, _resigned(flow, tokens["access_token"], **extra)) == \
            {"active": False}, name


def test_revoking_a_properly_signed_token_with_a_forbidden_header_revokes_nothing(flow):
    tokens = flow.tokens()
    public = flow.gw.keyring.signing_key.export_public(as_dict=True)
    for name, extra in dangerous_headers(public).items():
        before = ledger_snapshot(flow.gw)
        resp = flow.requester.post("/oauth/revoke", data={
            "token": _resigned(flow, tokens["access_token"], **extra), **flow.auth()})
        assert resp.status_code == 200, name  # RFC 7009: unknown tokens are answered 200
        assert ledger_snapshot(flow.gw) == before, name
    assert flow.data(tokens["access_token"]).status_code == 200


def test_another_client_cannot_introspect_or_revoke_my_token(app):
    bank, td = Flow(app), Flow(app, TD)
    tokens = bank.tokens()
    seen = td.requester.post("/oauth/introspect", data={"token": tokens["access_token"], **td.auth()})
    assert seen.get_json() == {"active": False}
    td.requester.post("/oauth/revoke", data={"token": tokens["access_token"], **td.auth()})
    assert bank.data(tokens["access_token"]).status_code == 200


def test_token_endpoint_without_client_auth_is_invalid_client(flow):
    code = flow.approved_code()
    resp = flow.requester.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.verifier})
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"
    assert flow.token(code).status_code == 200  # the code was not spent by the refusal


def test_access_token_lives_ten_minutes_at_most(flow, clock):
    tokens = flow.tokens()
    clock.advance(601)
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 401
    _ = time


def test_a_failed_exchange_spends_the_code(flow):
    code = flow.approved_code()
    assert flow.token(code, verifier="y" * 43).status_code == 400
    again = flow.token(code)
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"


def test_par_accepts_registered_oauth_parameters_and_ignores_them(flow):
    resp = flow.par(ui_locales="zh-HK", response_mode="query", nonce="n", prompt="login")
    assert resp.status_code == 201
    assert flow.par(response_mode="fragment").status_code == 400


def test_trailing_newline_in_code_challenge_is_refused(flow):
    resp = flow.par(code_challenge="A" * 43 + "\n")
    assert resp.status_code == 400


def test_nul_characters_are_refused_not_a_500(flow):
    assert flow.par(state="a\x00b").status_code == 400
    resp = flow.requester.post("/oauth/par", data=flow.par_form(
        client_assertion=flow.assertion(iss="bank\x00x")))
    assert resp.status_code == 401
    flow.login()
    assert flow.browser.get("/oauth/authorize?client_id=bank-of-example&request_uri=urn%00").status_code == 400


def test_head_on_the_data_api_releases_nothing(flow):
    tokens = flow.tokens(ONCE_DETAIL)
    before = ledger_snapshot(flow.gw)
    resp = flow.requester.head("/api/v1/data",
                               headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert resp.status_code == 405
    assert ledger_snapshot(flow.gw) == before
    assert flow.data(tokens["access_token"]).status_code == 200


def test_repeated_items_parameter_is_refused(flow):
    tokens = flow.tokens()
    resp = flow.requester.get("/api/v1/data?items=identity.hkid&items=identity.name_en",
                              headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert resp.status_code == 400


def test_approving_after_the_policy_withdrew_the_purpose_issues_no_code(flow):
    import json as _json
    from gateway import requester_registry
    request_uri = flow.par().get_json()["request_uri"]
    with flow.gw.transaction() as conn:
        row = requester_registry.get(conn, flow.client_id)
        policy = _json.loads(_json.dumps(row["policy"]))
        policy["purposes"]["other-purpose"] = policy["purposes"].pop("ekyc-account-opening")
        requester_registry.register(conn, 0, demo=True, client_id=row["client_id"], name=row["name"],
                           jwks=row["jwks"], redirect_uris=row["redirect_uris"],
                           kind=row["kind"], policy=policy)
    flow.login()
    answer = flow.decide(request_uri)
    assert answer.status_code == 303
    assert flow.query(answer)["error"] == "invalid_authorization_details"


# -- PostgreSQL: the usual exchange in two statements; anything unusual, the transaction -------

def _between_read_and_write(gw, monkeypatch, change):
    """Run ``change()`` once, after the exchange's read and before its write."""
    one, done = gw.prepared.one, []

    def then(statement, given):
        if "insert into tokens" in statement.sql.lower() and not done:
            done.append(change())
        return one(statement, given)
    monkeypatch.setattr(gw.prepared, "one", then)
    return done


def test_a_code_exchange_on_postgresql_is_one_read_and_one_write(pg_flow, monkeypatch):
    from gateway.audit import sequencer
    code = pg_flow.approved_code()
    monkeypatch.setattr(sequencer, "after_commit", lambda gw: None)   # the exchange's own
    with statements_sent(pg_flow.gw, monkeypatch) as sent:
        resp = pg_flow.token(code)
    assert resp.status_code == 200, resp.get_json()
    assert len(sent) == 2, sent
    assert sent[0].startswith("select") and "from authorization_codes join consents" in sent[0]
    assert "update authorization_codes" in sent[1] and "insert into tokens" in sent[1] \
        and "insert into audit_entries" in sent[1]
    assert pg_flow.data(resp.get_json()["access_token"]).status_code == 200
    assert pg_flow.token(code).get_json()["error"] == "invalid_grant"   # and single use


def test_a_consent_revoked_between_the_exchanges_read_and_write_gets_no_tokens(pg_flow,
                                                                              monkeypatch):
    code = pg_flow.approved_code()
    with pg_flow.gw.db.connect() as conn:
        consent_id = conn.execute(select(authorization_codes.c.consent_id)).scalar()
    done = _between_read_and_write(pg_flow.gw, monkeypatch,
                                   lambda: pg_flow.revoke_as_citizen(consent_id))
    answer = pg_flow.token(code)
    assert done and answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_grant"
    assert "no longer active" in answer.get_json()["error_description"]
    assert ledger_snapshot(pg_flow.gw)["tokens"] == 0


def test_a_policy_narrowed_between_the_exchanges_read_and_write_is_applied(pg_flow, monkeypatch):
    from .test_policy_narrowing import _narrow
    code = pg_flow.approved_code()
    done = _between_read_and_write(pg_flow.gw, monkeypatch, lambda: _narrow(
        pg_flow, lambda purpose: purpose.update(access=["once"])))
    answer = pg_flow.token(code)
    assert done and answer.status_code == 400
    assert "no longer allows ongoing access" in answer.get_json()["error_description"]
