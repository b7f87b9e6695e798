"""GET /api/v1/data: only valid gateway tokens, only live consents, only consented items."""
from __future__ import annotations

import base64
import json

import pytest
import responses
from jwcrypto import jwe, jwk, jws

from gateway.tokens import jose

from .forge import b64json, signed
from .flow import BANK_DETAIL, Flow, ledger_snapshot



def _claims(flow, tokens, **changes) -> dict:
    import jwt as pyjwt
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}



def _raw_es256(key, header: dict, claims: dict) -> str:
    """Sign whatever header we like (jwcrypto itself refuses to make some of these)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    signing_input = b64json(header) + "." + b64json(claims)
    der = key.get_op_key("sign").sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + "." + base64.urlsafe_b64encode(sig).decode().rstrip("=")


def _refused(flow, token: str):
    before = ledger_snapshot(flow.gw)
    resp = flow.data(token)
    assert resp.status_code == 401, resp.get_json()
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    body = resp.get_json()
    assert resp.mimetype == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == 401
    assert ledger_snapshot(flow.gw) == before


@pytest.fixture
def tokens(flow):
    return flow.tokens()


def test_alg_none_token_is_refused(flow, tokens):
    header = {"alg": "none", "typ": "at+jwt", "kid": flow.gw.keyring.signing_key.get("kid")}
    _refused(flow, b64json(header) + "." + b64json(_claims(flow, tokens)) + ".")


def test_hs256_signed_with_the_gateway_public_key_is_refused(flow, tokens):
    public = json.dumps(flow.gw.keyring.jwks()["keys"][0]).encode()
    key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public).decode().rstrip("="))
    header = {"alg": "HS256", "typ": "at+jwt", "kid": flow.gw.keyring.signing_key.get("kid")}
    _refused(flow, signed(key, _claims(flow, tokens), header))


def test_rs256_token_is_refused(flow, tokens):
    key = jwk.JWK.generate(kty="RSA", size=2048)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": flow.gw.keyring.signing_key.get("kid")}
    _refused(flow, signed(key, _claims(flow, tokens), header))


def test_jwe_where_a_jws_is_expected_is_refused(flow, tokens):
    key = jwk.JWK.generate(kty="oct", size=256)
    token = jwe.JWE(json.dumps(_claims(flow, tokens)).encode(),
                    protected={"alg": "A256KW", "enc": "A256GCM"})
    token.add_recipient(key)
    _refused(flow, token.serialize(compact=True))


@pytest.mark.parametrize("extra", [{"zip": "DEF"}, {"jku": "https://evil.example/jwks"},
                                   {"x5u": "https://evil.example/c"},
                                   {"crit": ["x-unknown"], "x-unknown": 1}])
def test_dangerous_header_on_a_correctly_signed_token_is_refused(flow, tokens, extra):
    key = flow.gw.keyring.signing_key
    header = {"alg": "ES256", "typ": "at+jwt", "kid": key.get("kid"), **extra}
    _refused(flow, _raw_es256(key, header, _claims(flow, tokens)))


def test_raw_signing_helper_makes_tokens_the_gateway_accepts(flow, tokens):
    key = flow.gw.keyring.signing_key
    header = {"alg": "ES256", "typ": "at+jwt", "kid": key.get("kid")}
    assert flow.data(_raw_es256(key, header, _claims(flow, tokens))).status_code == 200


def test_embedded_jwk_header_is_refused(flow, tokens):
    attacker = jwk.JWK.generate(kty="EC", crv="P-256", kid="evil")
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "evil",
              "jwk": attacker.export_public(as_dict=True)}
    _refused(flow, signed(attacker, _claims(flow, tokens), header))


def test_unknown_kid_is_refused(flow, tokens):
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    _refused(flow, signed(key, _claims(flow, tokens),
                         {"alg": "ES256", "typ": "at+jwt", "kid": "' OR 1=1 --"}))


@pytest.mark.parametrize("changes", [
    {"exp": "9999999999"}, {"exp": None}, {"aud": "http://other-gateway.test/api"},
    {"aud": "bank-of-example"}, {"iss": "http://evil.test"}, {"iat": 9_999_999_999},
    {"nbf": 9_999_999_999}, {"exp": 1}, {"consent_id": "cns_other"}, {"jti": "forged"},
], ids=["exp string", "no exp", "foreign aud", "client aud", "foreign iss", "iat ahead",
        "nbf ahead", "expired", "other consent", "unknown jti"])
def test_gateway_signed_token_with_bad_claims_is_refused(flow, tokens, changes):
    claims = _claims(flow, tokens, **changes)
    key = flow.gw.keyring.signing_key
    _refused(flow, signed(key, claims, {"alg": "ES256", "typ": "at+jwt", "kid": key.get("kid")}))


def test_typ_other_than_at_jwt_is_refused(flow, tokens):
    key = flow.gw.keyring.signing_key
    _refused(flow, signed(key, _claims(flow, tokens), {"alg": "ES256", "typ": "JWT",
                                                      "kid": key.get("kid")}))


def test_token_of_another_signer_with_our_kid_is_refused(flow, tokens):
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    _refused(flow, signed(key, _claims(flow, tokens), {"alg": "ES256", "typ": "at+jwt",
                                                      "kid": flow.gw.keyring.signing_key.get("kid")}))


@pytest.mark.parametrize("value", ["", "Bearer", "Basic abc", "Bearer a.b", "Bearer " + "x" * 9000])
def test_missing_or_malformed_authorization_is_refused(flow, value):
    resp = flow.requester.get("/api/v1/data", headers={"Authorization": value} if value else {})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_token_in_the_query_string_is_refused(flow, tokens):
    resp = flow.requester.get("/api/v1/data?access_token=" + tokens["access_token"])
    assert resp.status_code == 401


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
    from gateway.audit.chain import verify
    from gateway.store.db import audit_entries
    flow.data(tokens["access_token"])
    with flow.gw.db.connect() as conn:
        rows = [dict(r) for r in conn.execute(audit_entries.select()).mappings()]
        assert verify(conn) == len(rows)
    released = [r for r in rows if r["event"] == "data.released"]
    assert len(released) == 1
    assert released[0]["items"] == sorted(BANK_DETAIL["data_items"])
    assert released[0]["client_id"] == flow.client_id and released[0]["route"] == "api"
    text = json.dumps(rows, ensure_ascii=False)
    assert "A123456" not in text and "CHAN" not in text and "Mei Foo" not in text


def test_source_down_answers_503_and_releases_nothing(tmp_path, request, clock):
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
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert resp.mimetype == "application/problem+json"
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
    assert resp.status_code == 503
    assert "script" not in resp.get_data(as_text=True)
    app.extensions["cdeg"].close()
