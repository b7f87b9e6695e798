"""The CDI bridge (SPEC 5): an FI submits a signed query carrying the access token of a consent
it holds; a job releases the data through the same steps as the data API (route ``cdi``), seals
it (a JWS by the gateway inside a JWE to the FI's key); the FI polls for it."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from gateway.store.db import audit_entries, cdi_queries
from tests.cdi_fi import FIClient
from tests.flow import BANK_DETAIL

ITEMS = ["identity.name_en", "identity.hkid"]


def released(gw, route="cdi") -> int:
    with gw.db.connect() as conn:
        rows = conn.execute(select(audit_entries.c.entry)
                            .where(audit_entries.c.event == "data.released")).scalars().all()
    return sum(1 for entry in rows if json.loads(entry)["route"] == route)


def queries_stored(gw) -> int:
    with gw.db.connect() as conn:
        return conn.execute(select(func.count()).select_from(cdi_queries)).scalar()


@pytest.fixture
def fi(flow):
    return FIClient(flow)


@pytest.fixture
def tokens(flow):
    return flow.tokens()


def test_fi_query_is_released_through_cdi_sealed_for_that_fi(flow, fi, tokens):
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="ekyc-0001"))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"query_id": "ekyc-0001", "status": "queued"}

    answer = fi.poll("ekyc-0001")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["status"] == "done" and "error" not in body
    header, claims = fi.open(body["result"])
    assert (header["alg"], header["enc"], header["cty"]) == ("ECDH-ES+A256KW", "A256GCM", "JWT")
    assert claims["iss"] == flow.issuer and claims["aud"] == "bank-of-example"
    assert claims["query_id"] == "ekyc-0001" and claims["consent_id"] == tokens["consent_id"]
    assert sorted(claims["items"]) == sorted(ITEMS)
    assert claims["items"]["identity.hkid"]["value"] == "A123456(3)"
    assert claims["items"]["identity.name_en"]["source"] == "immd"
    assert released(flow.gw) == 1


def test_the_same_query_id_returns_the_same_query_and_fetches_nothing_twice(flow, fi, tokens):
    first = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-same"))
    again = fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-same"))
    assert first.status_code == again.status_code == 202
    assert again.get_json()["query_id"] == "q-same"
    assert again.get_json()["status"] in ("queued", "running", "done")
    assert queries_stored(flow.gw) == 1 and released(flow.gw) == 1


def test_a_query_id_reused_for_other_items_is_refused(flow, fi, tokens):
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-1")).status_code == 202
    resp = fi.submit(fi.message(tokens["access_token"], ["identity.hkid"], query_id="q-1"))
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["type"].endswith("/idempotency-key-reused")
    assert queries_stored(flow.gw) == 1


def test_a_message_replayed_whole_is_refused_409(flow, fi, tokens):
    message = fi.message(tokens["access_token"], ITEMS)
    assert fi.submit(message).status_code == 202
    resp = fi.submit(message)
    assert resp.status_code == 409
    assert resp.get_json()["type"].endswith("/message-replayed")
    assert queries_stored(flow.gw) == 1 and released(flow.gw) == 1


def test_items_outside_the_consent_are_refused_and_nothing_is_stored(flow, fi, tokens):
    resp = fi.submit(fi.message(tokens["access_token"], ["contact.mobile"]))
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/outside-consent")
    assert queries_stored(flow.gw) == 0


def test_a_revoked_consent_is_refused_at_submission(flow, fi, tokens):
    flow.revoke_as_citizen(tokens["consent_id"])
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS))
    assert resp.status_code == 401 and 'invalid_token' in resp.headers["WWW-Authenticate"]
    assert queries_stored(flow.gw) == 0


# -- refusals: each a clear problem, nothing stored, never a 500 ---------------------------------

def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned(claims: dict, header: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(claims: dict, fi) -> str:
    from jwcrypto import jwk
    from tests.cdi_fi import sign
    public = fi.sig.export_to_pem().decode()
    secret = jwk.JWK(kty="oct", k=_b64(public.encode()))
    return sign(claims, secret, alg="HS256", header={"alg": "HS256", "kid": fi.sig.get("kid")})


def _signed(fi, c, header: dict | None = None, raw: bytes | None = None, **claims) -> str:
    from tests.cdi_fi import sign
    base = {"alg": "ES256", "kid": fi.sig.get("kid")}
    header = None if header is None else {k: v for k, v in {**base, **header}.items()
                                          if v is not None}
    return sign(raw if raw is not None else fi.claims(**c, **claims), fi.sig, header=header)


def _with_raw_iat(fi, c, raw_iat: str) -> bytes:
    text = json.dumps(fi.claims(**c, iat=123456789))
    return text.replace("123456789", raw_iat).encode()


# case -> (the message, what the refusal must say)
REFUSED_MESSAGES = {
    "bad signature": (lambda fi, c: fi.message(**c)[:-6] + "AAAAAA", "signature does not verify"),
    "unknown kid": (lambda fi, c: _signed(fi, c, {"kid": "no-such-key"}), "kid is not one of"),
    "no kid": (lambda fi, c: _signed(fi, c, {"kid": None}), "needs the kid"),
    "alg none": (lambda fi, c: _unsigned(fi.claims(**c), {"alg": "none", "kid": fi.sig.get("kid")}),
                 "alg not accepted"),
    "HS256 with the public key": (lambda fi, c: _hs256_with_public_key(fi.claims(**c), fi),
                                  "alg not accepted"),
    "stale iat": (lambda fi, c: fi.message(**c, iat=fi.gw.clock.now() - 301), "minutes old"),
    "future iat": (lambda fi, c: fi.message(**c, iat=fi.gw.clock.now() + 120), "in the future"),
    "iat as a string": (lambda fi, c: fi.message(**c, iat=str(fi.gw.clock.now())), "bad fields"),
    "iat 1e400": (lambda fi, c: _signed(fi, c, raw=_with_raw_iat(fi, c, "1e400")), "bad fields"),
    "a zip header": (lambda fi, c: _signed(fi, c, {"zip": "DEF"}), "zip not accepted"),
    "a nested JWT (cty)": (lambda fi, c: _signed(fi, c, {"cty": "JWT"}), "cty"),
    "an embedded jwk": (lambda fi, c: _signed(fi, c, {"jwk": json.loads(fi.sig.export_public())}),
                        "jwk not accepted"),
    "a JWE instead of a JWS": (lambda fi, c: "eyJhbGciOiJFQ0RILUVTIn0.a.b.c.d", "a JWE was sent"),
    "not JOSE at all": (lambda fi, c: "hello", "not a compact JWS"),
    "deeply nested payload": (lambda fi, c: _signed(fi, c, raw=b"[" * 3000 + b"]" * 3000),
                              "not a JSON object"),
    "an unknown field": (lambda fi, c: fi.message(**c, status="done"), "bad fields"),
    "no items": (lambda fi, c: fi.message(**{**c, "items": []}), "bad fields"),
    "a foreign aud": (lambda fi, c: fi.message(**c, aud="https://elsewhere.example"),
                      "aud must name this gateway"),
    "an expired exp": (lambda fi, c: fi.message(**c, exp=fi.gw.clock.now() - 1), "expired"),
    "a callback URL not registered": (lambda fi, c: fi.message(
        **c, callback_url="https://attacker.example/cb"), "not one of the FI's registered"),
    "an HKID as query_id": (lambda fi, c: fi.message(**c, query_id="A1234563"), "bad fields"),
    "a garbage access token": (lambda fi, c: fi.message(**{**c, "access_token": "x.y.z"},
                                                        iss="bank-of-example"), "malformed token"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_MESSAGES))
def test_bad_messages_are_refused_with_a_problem_and_store_nothing(flow, fi, tokens, case):
    build, reason = REFUSED_MESSAGES[case]
    resp = fi.submit(build(fi, {"access_token": tokens["access_token"], "items": ITEMS}))
    assert resp.status_code in (400, 401, 403), (case, resp.status_code, resp.get_data())
    assert resp.mimetype == "application/problem+json"
    problem = resp.get_json()
    assert problem["status"] == resp.status_code and reason in problem["detail"], problem
    if resp.status_code == 401:
        assert resp.headers.get("WWW-Authenticate")
    assert queries_stored(flow.gw) == 0 and released(flow.gw) == 0


def test_a_message_must_be_sent_as_application_jose(flow, fi, tokens):
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS), content_type="application/json")
    assert resp.status_code == 415 and resp.mimetype == "application/problem+json"


def test_an_oversized_message_is_refused_before_it_is_read(flow, fi, tokens):
    resp = fi.submit("a" * (17 * 1024))
    assert resp.status_code == 413 and resp.mimetype == "application/problem+json"


def test_a_token_held_by_another_requester_is_refused(app, fi, flow):
    from tests.flow import Flow, TD
    td = Flow(app, TD)
    td_tokens = td.tokens({"type": "cdeg_data", "purpose": "vehicle-licence-renewal",
                           "access": "once",
                           "data_items": ["identity.name_en", "identity.hkid",
                                          "address.residential"]})
    resp = fi.submit(fi.message(td_tokens["access_token"], ["identity.name_en"],
                                iss="bank-of-example"))
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/token-not-held")
    # signed by the bank but naming no iss: the token's requester is not an FI, so no key
    resp = fi.submit(fi.message(td_tokens["access_token"], ["identity.name_en"]))
    assert resp.status_code == 401
    assert queries_stored(flow.gw) == 0


def test_redis_down_when_a_query_arrives_answers_503_and_stores_nothing(flow, fi, tokens,
                                                                         monkeypatch):
    from gateway.errors import StoreUnavailable

    def down(*args, **kwargs):
        raise StoreUnavailable("the replay guard did not answer")
    monkeypatch.setattr(flow.gw.redis, "claim_once_and_hit", down)
    resp = fi.submit(fi.message(tokens["access_token"], ITEMS))
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert queries_stored(flow.gw) == 0


# -- polling ------------------------------------------------------------------------------------

def test_another_fi_gets_404_for_a_query_that_is_not_its_own(app, flow, fi, tokens):
    from gateway import requester_registry
    from tests.cdi_fi import FIClient, new_fi_keys
    sig, enc, public = new_fi_keys("other-bank")
    with flow.gw.transaction() as conn:
        requester_registry.register(conn, flow.gw.clock.now(), client_id="other-bank",
                                    name="Other Bank", jwks=public, kind="fi",
                                    redirect_uris=["https://other.example/cb"], demo=True)
    other = FIClient(flow, "other-bank", (sig, enc))
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="mine")).status_code == 202
    theirs = other.poll("mine")
    assert theirs.status_code == 404 and theirs.get_json()["type"].endswith("/not-found")
    assert other.poll("never-made").get_json() == theirs.get_json()
    assert fi.poll("mine").status_code == 200


POLL_REFUSALS = {
    "no Authorization": lambda fi: None,
    "another audience": lambda fi: fi.assertion(aud=fi.gw.config.issuer),
    "expired": lambda fi: fi.assertion(exp=fi.gw.clock.now() - 1),
    "lives too long": lambda fi: fi.assertion(exp=fi.gw.clock.now() + 3600),
    "exp just past 5 minutes": lambda fi: fi.assertion(exp=fi.gw.clock.now() + 330),
    "an audience among others": lambda fi: fi.assertion(
        aud=[fi.gw.config.issuer + "/cdi", "https://elsewhere.example"]),
    "sub is not the FI": lambda fi: fi.assertion(sub="someone-else"),
    "not signed": lambda fi: _unsigned({"iss": "bank-of-example", "sub": "bank-of-example",
                                        "aud": fi.gw.config.issuer + "/cdi", "jti": "j",
                                        "exp": fi.gw.clock.now() + 60},
                                       {"alg": "none", "kid": fi.sig.get("kid")}),
    "garbage": lambda fi: "not-a-jwt",
}


@pytest.mark.parametrize("case", sorted(POLL_REFUSALS))
def test_polling_without_a_good_fi_assertion_is_401(flow, fi, tokens, case):
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-p")).status_code == 202
    assertion = POLL_REFUSALS[case](fi)
    headers = {} if assertion is None else {"Authorization": f"Bearer {assertion}"}
    resp = fi.http.get("/cdi/v1/queries/q-p", headers=headers)
    assert resp.status_code == 401, (case, resp.get_json())
    assert resp.mimetype == "application/problem+json" and resp.headers["WWW-Authenticate"]


# -- the job: failures end the query, never with part of the data ------------------------------

def test_a_source_that_fails_ends_the_query_failed_with_a_reason_and_no_data(flow, fi, tokens,
                                                                            monkeypatch):
    departments = flow.gw.departments.in_process
    real = departments.answer

    def immd_down(path, payload):
        return (503, {"error": "down"}) if path.startswith("/immd/") else real(path, payload)
    monkeypatch.setattr(departments, "answer", immd_down)
    assert fi.submit(fi.message(tokens["access_token"], ITEMS + ["address.residential"],
                                query_id="q-f")).status_code == 202
    body = fi.poll("q-f").get_json()
    assert body["status"] == "failed" and "result" not in body
    assert body["error"]["code"] == "source-failed" and "immd" in body["error"]["detail"]
    assert released(flow.gw) == 0


def test_a_consent_revoked_before_the_job_runs_ends_the_query_failed(flow, fi, tokens,
                                                                     monkeypatch):
    from gateway.jobs import outbox
    monkeypatch.setattr(outbox, "relay_quietly", lambda gw: None)   # the job waits
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-r")).status_code == 202
    assert fi.poll("q-r").get_json()["status"] == "queued"
    flow.revoke_as_citizen(tokens["consent_id"])
    outbox.relay(flow.gw)
    body = fi.poll("q-r").get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "consent-ended"
    assert "result" not in body and released(flow.gw) == 0


def test_a_once_consent_read_through_cdi_ends_with_that_read(flow, fi):
    from tests.flow import ONCE_DETAIL
    once = flow.tokens(ONCE_DETAIL)
    assert fi.submit(fi.message(once["access_token"], ITEMS, query_id="q-o")).status_code == 202
    assert fi.poll("q-o").get_json()["status"] == "done"
    resp = fi.submit(fi.message(once["access_token"], ITEMS, query_id="q-o2"))
    assert resp.status_code == 401


def test_the_release_shows_in_the_citizens_access_log_with_route_cdi(flow, fi, tokens):
    assert 'data-route="cdi"' not in flow.browser.get("/me").get_data(as_text=True)
    assert fi.submit(fi.message(tokens["access_token"], ITEMS)).status_code == 202
    page = flow.browser.get("/me").get_data(as_text=True)
    assert ('data-route="cdi" data-items="identity.hkid,identity.name_en" '
            'data-client-id="bank-of-example"') in page
    assert "through the CDI bridge (banks)" in page


def test_a_polling_assertion_works_once(flow, fi, tokens):
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-a")).status_code == 202
    assertion = fi.assertion()
    assert fi.poll("q-a", assertion).status_code == 200
    again = fi.poll("q-a", assertion)
    assert again.status_code == 401 and "used before" in again.get_json()["detail"]


def test_a_request_without_credentials_is_told_how_to_authenticate_without_an_error_code(flow):
    resp = flow.requester.get("/cdi/v1/queries/q-1")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="cdi"'


def test_a_sealed_result_is_purged_after_it_was_collected_or_kept_too_long(flow, fi, tokens):
    from gateway.cdi.queries import purge_results
    gw = flow.gw
    for query_id in ("q-collected", "q-never-collected"):
        assert fi.submit(fi.message(tokens["access_token"], ITEMS,
                                    query_id=query_id)).status_code == 202
    assert "result" in fi.poll("q-collected").get_json()          # collected now
    assert purge_results(gw) == 0                                 # the FI may fetch again a while
    gw.clock.advance(gw.config.cdi_collected_grace + 1)
    assert purge_results(gw) == 1
    gone = fi.poll("q-collected").get_json()
    assert gone["status"] == "done" and "result" not in gone
    assert gone["error"]["code"] == "result-purged"
    assert "result" in fi.poll("q-never-collected").get_json()
    gw.clock.advance(gw.config.cdi_result_ttl)
    assert purge_results(gw) == 1
    assert fi.poll("q-never-collected").get_json()["error"]["code"] == "result-purged"


def test_a_query_whose_job_fails_every_try_ends_failed_not_running_for_ever(flow, fi, tokens,
                                                                            monkeypatch):
    from gateway.jobs import cdi_query, outbox
    from gateway.tokens import jwe

    def broken(*args, **kwargs):
        raise RuntimeError("a fault the job does not know")
    monkeypatch.setattr(jwe, "seal", broken)
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-s")).status_code == 202
    gw = flow.gw
    for _ in range(gw.config.job_attempts + 2):
        gw.clock.advance(gw.config.job_stale_after + 1)
        outbox.relay(gw)
    body = fi.poll("q-s").get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "internal-error"
    assert released(gw) == 0
    assert cdi_query.give_up is not None


def test_a_query_whose_last_worker_died_is_given_up_once_its_lease_ends(flow, fi, tokens,
                                                                        monkeypatch):
    from sqlalchemy import update

    from gateway.jobs import outbox
    from gateway.store.db import outbox as outbox_rows
    monkeypatch.setattr(outbox, "relay_quietly", lambda gw: None)   # the job waits
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-d")).status_code == 202
    gw = flow.gw
    with gw.transaction() as conn:     # as a worker killed during its last try leaves it
        conn.execute(update(outbox_rows).values(attempts=gw.config.job_attempts,
                                                claimed_at=gw.clock.now(),
                                                relayed_at=gw.clock.now()))
    assert outbox.give_up_stale(gw) == 0                            # its lease still runs
    gw.clock.advance(gw.config.job_timeout + 1)
    assert outbox.give_up_stale(gw) == 1
    body = fi.poll("q-d").get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "internal-error"


def test_a_run_that_finds_its_query_ended_by_another_run_releases_nothing(flow, fi, monkeypatch):
    from gateway.jobs import cdi_query, outbox
    from tests.flow import ONCE_DETAIL
    once = flow.tokens(ONCE_DETAIL)
    monkeypatch.setattr(outbox, "relay_quietly", lambda gw: None)
    assert fi.submit(fi.message(once["access_token"], ITEMS, query_id="q-c")).status_code == 202
    real = flow.gw.router.fetch

    def meanwhile(hkid, items):       # another run of the same query ends it first
        with flow.gw.db.connect() as conn:
            row = conn.execute(select(cdi_queries)).first()
        cdi_query._fail(flow.gw, row, "source-timeout", "the other run's outcome")
        return real(hkid, items)
    monkeypatch.setattr(flow.gw.router, "fetch", meanwhile)
    with flow.gw.db.connect() as conn:
        query = conn.execute(select(cdi_queries.c.id)).scalar()
    assert cdi_query.run_query(flow.gw, query) == "ended by another run"
    assert fi.poll("q-c").get_json()["error"]["code"] == "source-timeout"
    assert released(flow.gw) == 0
    with flow.gw.db.connect() as conn:      # the once consent was not spent
        from gateway.store.db import consents
        status = conn.execute(select(consents.c.status)
                              .where(consents.c.consent_id == once["consent_id"])).scalar()
    assert status == "approved"


def test_a_policy_narrowed_while_the_sources_answered_releases_nothing(flow, fi, tokens,
                                                                       monkeypatch):
    from sqlalchemy import update

    from gateway.store.db import requesters
    real = flow.gw.router.fetch

    def narrowed_meanwhile(hkid, items):
        with flow.gw.transaction() as conn:
            policy = conn.execute(select(requesters.c.policy)
                                  .where(requesters.c.client_id == "bank-of-example")).scalar()
            policy = json.loads(json.dumps(policy))
            policy["purposes"]["ekyc-account-opening"]["retention"] = "P6Y"
            conn.execute(update(requesters).where(requesters.c.client_id == "bank-of-example")
                         .values(policy=policy))
        return real(hkid, items)
    monkeypatch.setattr(flow.gw.router, "fetch", narrowed_meanwhile)
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-n")).status_code == 202
    body = fi.poll("q-n").get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "policy-changed"
    assert released(flow.gw) == 0


def test_the_same_query_id_with_a_refreshed_token_is_the_same_query(flow, fi):
    tokens = flow.tokens()
    assert fi.submit(fi.message(tokens["access_token"], ITEMS, query_id="q-rt")).status_code == 202
    fresh = flow.requester.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        **flow.auth()}).get_json()
    assert fresh["access_token"] != tokens["access_token"]
    again = fi.submit(fi.message(fresh["access_token"], ITEMS, query_id="q-rt"))
    assert again.status_code == 202 and again.get_json()["query_id"] == "q-rt"
    assert queries_stored(flow.gw) == 1 and released(flow.gw) == 1


def test_a_query_repeated_asks_the_departments_nothing_more(flow, fi, tokens, monkeypatch):
    departments = flow.gw.departments.in_process
    asked = []
    real = departments.answer
    monkeypatch.setattr(departments, "answer",
                        lambda path, payload: asked.append(path) or real(path, payload))
    for _ in range(3):
        assert fi.submit(fi.message(tokens["access_token"], ITEMS,
                                    query_id="q-once")).status_code == 202
    assert asked == ["/immd/v1/identity"]
