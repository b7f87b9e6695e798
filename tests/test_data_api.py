"""GET /api/v1/data: only valid gateway tokens, only live consents, only consented items."""
from __future__ import annotations

import base64
import json

import pytest
import responses
from jwcrypto import jwe, jwk, jws

from gateway.tokens import jose

from .forge import DANGEROUS_HEADERS, b64json, dangerous_headers, raw_signed, signed
from .flow import BANK_DETAIL, Flow, ledger_snapshot


def _claims(flow, tokens, **changes) -> dict:
    import jwt as pyjwt
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _header(flow, **changes) -> dict:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": flow.gw.keyring.signing_key.get("kid"),
              **changes}
    return {k: v for k, v in header.items() if v is not None}


def _gateway_signed(flow, tokens, header: dict | None = None, **changes) -> str:
    """The issued token's claims (with ``changes``), signed by the gateway's own signing key."""
    return raw_signed(flow.gw.keyring.signing_key, header or _header(flow),
                      _claims(flow, tokens, **changes))


def _refused(flow, token: str, reason: str | None = None):
    """401 invalid_token, nothing stored; ``reason``: the problem's detail names the fault (so the
    test fails when a later check refuses the token for something else)."""
    before = ledger_snapshot(flow.gw)
    resp = flow.data(token)
    assert resp.status_code == 401, resp.get_json()
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    body = resp.get_json()
    assert resp.mimetype == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == 401
    if reason is not None:
        assert reason in body["detail"], body
    assert ledger_snapshot(flow.gw) == before


@pytest.fixture
def tokens(flow):
    return flow.tokens()


def test_raw_signing_helper_makes_tokens_the_gateway_accepts(flow, tokens):
    """The control for every hand-built refusal below: the same builder, nothing wrong."""
    assert flow.data(_gateway_signed(flow, tokens)).status_code == 200


def test_alg_none_token_is_refused(flow, tokens):
    token = b64json(_header(flow, alg="none")) + "." + b64json(_claims(flow, tokens)) + "."
    _refused(flow, token, "alg not accepted")


def test_hs256_signed_with_the_gateway_public_key_is_refused(flow, tokens):
    public = json.dumps(flow.gw.keyring.jwks()["keys"][0]).encode()
    key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public).decode().rstrip("="))
    _refused(flow, signed(key, _claims(flow, tokens), _header(flow, alg="HS256")),
             "alg not accepted")


def test_rs256_token_is_refused(flow, tokens):
    """The gateway has no RSA key: an RS256 token under its kid is refused for its alg."""
    key = jwk.JWK.generate(kty="RSA", size=2048)
    _refused(flow, signed(key, _claims(flow, tokens), _header(flow, alg="RS256")),
             "alg not accepted")


def test_jwe_encrypted_to_the_gateways_own_key_is_refused_where_a_jws_is_expected(flow, tokens):
    """Anyone can encrypt to the published key; the gateway holds the private half."""
    published = flow.gw.keyring.jwks()["keys"][0]
    public = jwk.JWK(**{k: v for k, v in published.items() if k not in ("use", "alg")})
    token = jwe.JWE(json.dumps(_claims(flow, tokens)).encode(),
                    protected={"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "typ": "at+jwt",
                               "kid": flow.gw.keyring.signing_key.get("kid")})
    token.add_recipient(public)
    _refused(flow, token.serialize(compact=True), "not a compact JWS")


# Each header alone, on a token correctly signed by the gateway's own key under its kid and
# carrying the issued token's claims: only the header guard stands between it and a release.
@pytest.mark.parametrize("name", [n for n in DANGEROUS_HEADERS if n != "jwk"])
def test_dangerous_header_on_a_correctly_signed_token_is_refused(flow, tokens, name):
    header = _header(flow, **dangerous_headers({})[name])
    _refused(flow, _gateway_signed(flow, tokens, header), f"header {name.split()[0]} not accepted")


def test_embedded_jwk_header_is_refused_even_when_properly_signed(flow, tokens):
    """The gateway's own public key embedded, its own kid, its own signature."""
    header = _header(flow, jwk=flow.gw.keyring.signing_key.export_public(as_dict=True))
    _refused(flow, _gateway_signed(flow, tokens, header), "header jwk not accepted")


def test_embedded_attacker_jwk_is_refused_for_the_header_before_any_signature_check(flow, tokens):
    """An attacker's key embedded under the gateway's kid, signed by the attacker: refused for
    the jwk header itself, not merely because the signature does not match the gateway's key."""
    attacker = jwk.JWK.generate(kty="EC", crv="P-256", kid=flow.gw.keyring.signing_key.get("kid"))
    header = _header(flow, jwk=attacker.export_public(as_dict=True))
    _refused(flow, raw_signed(attacker, header, _claims(flow, tokens)), "header jwk not accepted")


def test_unknown_kid_is_refused_even_when_signed_by_the_gateways_key(flow, tokens):
    _refused(flow, _gateway_signed(flow, tokens, _header(flow, kid="' OR 1=1 --")), "unknown kid")


def test_token_larger_than_8_kib_is_refused_even_when_properly_signed(flow, tokens):
    _refused(flow, _gateway_signed(flow, tokens, padding="p" * 9000), "too large")


# Each fault alone, on a token signed by the gateway's own key; ``now`` is the gateway's clock.
CLAIM_FAULTS = {
    # jwcrypto itself cannot compare a string exp with the time: refused as invalid claims
    "exp string": (lambda now: {"exp": str(now + 60)}, "claims invalid"),
    "exp fraction": (lambda now: {"exp": now + 60.5}, "exp must be a number"),
    "no exp": (lambda now: {"exp": None}, "exp is missing"),
    # no leeway on exp (jwcrypto alone would allow 60 s)
    "expired 30 s ago": (lambda now: {"exp": now - 30}, "expired"),
    "expired long ago": (lambda now: {"exp": 1}, "expired"),
    "exp too far": (lambda now: {"exp": now + 3600}, "lives too long"),
    "foreign aud": (lambda now: {"aud": "http://other-gateway.test/api"}, "wrong value"),
    "client aud": (lambda now: {"aud": "bank-of-example"}, "wrong value"),
    "foreign iss": (lambda now: {"iss": "http://evil.test"}, "wrong value"),
    "iat ahead": (lambda now: {"iat": 9_999_999_999}, "iat is in the future"),
    "iat string": (lambda now: {"iat": str(now)}, "iat must be a number"),
    "no iat": (lambda now: {"iat": None}, "iat is missing"),
    "nbf ahead": (lambda now: {"nbf": 9_999_999_999}, "nbf is in the future"),
    "nbf string": (lambda now: {"nbf": str(now)}, "nbf must be a number"),
    "no jti": (lambda now: {"jti": None}, "jti is missing"),
    "no sub": (lambda now: {"sub": None}, "sub is missing"),
    "no client_id": (lambda now: {"client_id": None}, "client_id is missing"),
    "client_id number": (lambda now: {"client_id": 7}, "client_id must be a string"),
    "no consent_id": (lambda now: {"consent_id": None}, "consent_id is missing"),
    "consent_id number": (lambda now: {"consent_id": 7}, "consent_id must be a string"),
    # well-formed and signed, but naming what the ledger does not hold: refused after verifying
    "other consent": (lambda now: {"consent_id": "cns_other"}, None),
    "unknown jti": (lambda now: {"jti": "forged"}, None),
}


@pytest.mark.parametrize("fault", list(CLAIM_FAULTS))
def test_gateway_signed_token_with_bad_claims_is_refused(flow, tokens, fault):
    changes, reason = CLAIM_FAULTS[fault]
    _refused(flow, _gateway_signed(flow, tokens, **changes(flow.gw.clock.now())), reason)


@pytest.mark.parametrize("typ", ["JWT", None], ids=["JWT", "absent"])
def test_typ_other_than_at_jwt_is_refused(flow, tokens, typ):
    _refused(flow, _gateway_signed(flow, tokens, _header(flow, typ=typ)), "typ must be at+jwt")


def test_token_of_another_signer_with_our_kid_is_refused(flow, tokens):
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    _refused(flow, raw_signed(key, _header(flow), _claims(flow, tokens)),
             "signature or claims invalid")


@pytest.mark.parametrize("value", ["", "Bearer", "Basic abc", "Bearer a.b", "Bearer " + "x" * 9000])
def test_missing_or_malformed_authorization_is_refused(flow, value):
    resp = flow.requester.get("/api/v1/data", headers={"Authorization": value} if value else {})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_token_in_the_query_string_is_refused(flow, tokens):
    resp = flow.requester.get("/api/v1/data?access_token=" + tokens["access_token"])
    assert resp.status_code == 401


def test_a_data_call_never_reads_or_writes_a_citizen_session(flow, tokens, monkeypatch):
    """The bearer edges are called by machines: a session cookie sent along is not looked up
    in Redis, and no cookie is set."""
    def looked_up(*args):
        pytest.fail("the data API read a citizen session")
    monkeypatch.setattr(flow.gw.redis, "session_get", looked_up)
    flow.requester.set_cookie("cdeg_session", "s" * 43)
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers


def test_token_in_a_form_body_is_refused_even_beside_the_header(flow, tokens):
    """RFC 6750 2.2's form-encoded body parameter is not accepted, and a request sending the
    token two ways (section 2: MUST NOT) is not served by the header's copy."""
    resp = flow.requester.get("/api/v1/data", data={"access_token": tokens["access_token"]},
                              headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert resp.status_code == 401
    assert "Authorization header only" in resp.get_json()["detail"]


def test_items_outside_the_consent_are_refused_with_field_errors(flow, tokens):
    before = ledger_snapshot(flow.gw)
    resp = flow.data(tokens["access_token"], items="identity.name_en,contact.mobile")
    assert resp.status_code == 403
    body = resp.get_json()
    assert resp.mimetype == "application/problem+json"
    assert "contact.mobile" in body["errors"]["items"][0]
    assert ledger_snapshot(flow.gw) == before


@pytest.mark.parametrize("query", ["items=", "items=,", "items=a,,b", "other=1"])
def test_malformed_query_is_a_400_problem(flow, tokens, query):
    resp = flow.requester.get("/api/v1/data?" + query,
                              headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["errors"]


def test_signed_answer_verifies_with_the_published_keys(flow, tokens):
    resp = flow.data(tokens["access_token"], accept="application/jwt")
    assert resp.status_code == 200 and resp.mimetype == "application/jwt"
    token = resp.get_data(as_text=True)
    kid = jose.unverified_header(token)["kid"]
    keys = {k["kid"]: jwk.JWK(**k) for k in flow.requester.get("/jwks.json").get_json()["keys"]}
    checked = jws.JWS()
    checked.deserialize(token)
    checked.verify(keys[kid], alg="ES256")
    body = json.loads(checked.payload)
    assert body["aud"] == flow.client_id and body["iss"] == flow.issuer
    assert set(body["items"]) == set(BANK_DETAIL["data_items"])


def test_narrowing_the_policy_narrows_a_live_consent_at_the_next_call(flow, tokens):
    from gateway import requester_registry
    with flow.gw.transaction() as conn:
        row = requester_registry.get(conn, flow.client_id)
        policy = json.loads(json.dumps(row["policy"]))
        policy["purposes"]["ekyc-account-opening"]["items"]["required"].remove("address.residential")
        requester_registry.register(conn, 0, demo=True, client_id=row["client_id"], name=row["name"],
                           jwks=row["jwks"], redirect_uris=row["redirect_uris"], kind=row["kind"],
                           policy=policy)
    body = flow.data(tokens["access_token"]).get_json()
    assert "address.residential" not in body["items"]
    assert "identity.name_en" in body["items"]


def test_each_release_is_audited_with_item_ids_and_no_values(flow, tokens):
    from gateway.audit.verify import verify
    from gateway.store.db import audit_entries
    flow.data(tokens["access_token"])
    from gateway.audit import sequencer
    sequencer.integrate_all(flow.gw)
    with flow.gw.db.connect() as conn:
        rows = [json.loads(r.entry) for r in conn.execute(audit_entries.select())]
    assert verify(flow.gw).entries == len(rows)
    released = [r for r in rows if r["event"] == "data.released"]
    assert len(released) == 1
    assert released[0]["items"] == sorted(BANK_DETAIL["data_items"])
    assert released[0]["client_id"] == flow.client_id and released[0]["route"] == "api"
    text = json.dumps(rows, ensure_ascii=False)
    assert "A123456" not in text and "CHAN" not in text and "Mei Foo" not in text


def test_a_source_answering_503_is_a_502_naming_it_and_releases_nothing(tmp_path, request, clock):
    from .conftest import build_app, make_config
    config = make_config(tmp_path, "embedded", request,
                         departments_url="http://departments.test")
    app = build_app(config, clock)
    flow = Flow(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        record = {"name_en": "CHAN, Tai Man", "name_zh": "陳大文", "date_of_birth": "1985-03-14",
                  "sex": "M", "as_of": "2026-01-01T00:00:00Z"}
        mock.post("http://departments.test/immd/v1/identity", json=record)
        tokens = flow.tokens()
        mock.replace(responses.POST, "http://departments.test/immd/v1/identity", status=503)
        before = ledger_snapshot(flow.gw)
        resp = flow.data(tokens["access_token"])
    assert resp.status_code == 502 and resp.headers["Retry-After"]
    assert resp.mimetype == "application/problem+json"
    assert "immd" in resp.get_json()["detail"]
    assert ledger_snapshot(flow.gw) == before
    app.extensions["cdeg"].close()


def test_a_source_answering_garbage_is_not_passed_on(tmp_path, request, clock):
    from .conftest import build_app, make_config
    app = build_app(make_config(tmp_path, "embedded", request,
                                departments_url="http://departments.test"), clock)
    flow = Flow(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        good = {"name_en": "CHAN, Tai Man", "name_zh": "陳大文", "date_of_birth": "1985-03-14",
                "sex": "M", "as_of": "2026-01-01T00:00:00Z"}
        mock.post("http://departments.test/immd/v1/identity", json=good)
        mock.post("http://departments.test/eme/v1/profile",
                  json={"mobile": None, "email": None, "address": {"district": "Atlantis",
                                                                    "region": "KLN"},
                        "as_of": "2026"})
        tokens = flow.tokens({**BANK_DETAIL, "data_items": ["identity.name_en", "identity.hkid",
                                                            "identity.date_of_birth",
                                                            "address.residential"]})
        mock.replace(responses.POST, "http://departments.test/immd/v1/identity",
                     json={**good, "name_en": "<script>x</script>\r\n"})
        resp = flow.data(tokens["access_token"])
    assert resp.status_code == 502 and resp.get_json()["type"].endswith("/problems/source-failed")
    assert "script" not in resp.get_data(as_text=True)
    app.extensions["cdeg"].close()
