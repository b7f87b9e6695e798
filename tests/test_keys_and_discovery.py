"""Signing keys in the instance folder, their rotation, and what the gateway publishes."""
from __future__ import annotations

import os
import stat
import time

import jwt as pyjwt

from gateway.clock import Clock
from gateway.tokens.keyring import Keyring


def test_first_start_creates_a_private_key_readable_only_by_the_owner(gw):
    folder = gw.config.instance_dir / "keys"
    pems = list(folder.glob("*.pem"))
    assert len(pems) == 1
    assert stat.S_IMODE(os.stat(pems[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_jwks_publishes_public_keys_only(flow):
    keys = flow.requester.get("/jwks.json").get_json()["keys"]
    assert keys and all("d" not in k and k["kty"] == "EC" and k["alg"] == "ES256" and k["kid"]
                        for k in keys)


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(flow, clock):
    old = flow.tokens()
    old_kid = pyjwt.get_unverified_header(old["access_token"])["kid"]
    # rotate as the CLI does: another Keyring object on the same folder, another process
    Keyring(flow.gw.config.instance_dir / "keys", Clock()).rotate()
    time.sleep(1.1)  # a running gateway looks for rotations made elsewhere once a second
    new = Flow2(flow).tokens()
    new_kid = pyjwt.get_unverified_header(new["access_token"])["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in flow.requester.get("/jwks.json").get_json()["keys"]}
    assert {old_kid, new_kid} <= kids
    assert flow.data(old["access_token"]).status_code == 200
    clock.advance(700)  # the old key's tokens have all expired; what else it signed has not
    kids = {k["kid"] for k in flow.requester.get("/jwks.json").get_json()["keys"]}
    assert {old_kid, new_kid} <= kids


def Flow2(flow):
    from .flow import Flow
    return Flow(flow.app)


def test_metadata_follows_rfc8414_and_names_every_endpoint_under_the_issuer(flow):
    meta = flow.requester.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["issuer"] == flow.issuer
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "revocation_endpoint",
                "introspection_endpoint", "pushed_authorization_request_endpoint"):
        assert meta[key].startswith(flow.issuer + "/")
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert meta["require_pushed_authorization_requests"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True


def test_health_and_readiness(flow):
    assert flow.requester.get("/healthz").get_json() == {"status": "ok"}
    ready = flow.requester.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_unknown_api_path_is_a_problem_document(flow):
    resp = flow.requester.get("/api/v1/nothing")
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    resp = flow.requester.delete("/api/v1/data")
    assert resp.status_code == 405 and resp.mimetype == "application/problem+json"


def test_oauth_endpoint_wrong_method_is_an_oauth_error(flow):
    resp = flow.requester.get("/oauth/token")
    assert resp.status_code == 405 and resp.get_json()["error"] == "invalid_request"


def _start_gateway(instance_dir: str, out):
    from gateway.config import Config
    from gateway.instance import Gateway
    gw = Gateway(Config(instance_dir=instance_dir, issuer="http://gateway.test", env="test"))
    out.put((gw.keyring.signing_key.get("kid"), gw.pairwise_secret.hex()))


def test_workers_starting_together_on_an_empty_instance_agree_on_keys_and_secret(tmp_path):
    import json
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_start_gateway, args=(tmp_path / "instance", out))
             for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    answers = {out.get(timeout=5) for _ in procs}
    assert len(answers) == 1          # one signing key, one secret, for every worker
    keys = tmp_path / "instance" / "keys"
    listed = {e["kid"] for e in json.loads((keys / "keyring.json").read_text())}
    assert {p.stem for p in keys.glob("*.pem")} == listed and len(listed) == 1


def test_every_url_the_metadata_names_answers(flow):
    meta = flow.requester.get("/.well-known/oauth-authorization-server").get_json()
    urls = [v for v in meta.values() if isinstance(v, str) and v.startswith(flow.issuer + "/")]
    for url in urls:
        path = url[len(flow.issuer):]
        status = flow.requester.get(path).status_code
        assert status in (200, 400, 405), (path, status)  # exists (POST-only ones answer 405)


def test_a_retired_key_stays_published_for_receipts_until_pruned_past_the_longest_retention(
        flow, clock):
    from gateway.tokens.keyring import keep_retired_for
    from schemas.duration import seconds
    tokens = flow.tokens()
    receipt = flow.requester.get(f"/api/v1/consents/{tokens['consent_id']}", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}).get_json()["receipt"]
    old_kid = pyjwt.get_unverified_header(receipt)["kid"]
    ring = flow.gw.keyring
    ring.rotate()
    with flow.gw.db.connect() as conn:
        keep_for = keep_retired_for(conn, flow.gw.config)
    assert keep_for == seconds("P7Y")              # the demo policies keep data seven years
    clock.advance(400 * 86400)                     # a year on: the receipt still verifies
    assert ring.prune(keep_for) == []
    keys = {k["kid"]: k for k in flow.requester.get("/jwks.json").get_json()["keys"]}
    public = pyjwt.PyJWK(keys[old_kid]).key
    assert pyjwt.decode(receipt, public, algorithms=["ES256"], audience="bank-of-example")
    assert ring.signing_key.get("kid") != old_kid   # it signs nothing new
    clock.advance(keep_for)                        # past the longest retention
    assert ring.prune(keep_for) == [old_kid]
    kids = {k["kid"] for k in flow.requester.get("/jwks.json").get_json()["keys"]}
    assert old_kid not in kids and ring.signing_key.get("kid") in kids


def test_an_access_token_of_a_key_retired_longer_ago_than_a_tokens_life_is_refused(flow, clock):
    from gateway.tokens import access
    ring = flow.gw.keyring
    old_key = ring.signing_key
    ring.rotate()
    clock.advance(flow.gw.config.access_token_ttl + flow.gw.config.clock_skew + 5)
    token, _ = access.mint(ring, issuer=flow.issuer, audience=flow.gw.config.api_audience,
                           subject="s", client_id="bank-of-example", consent_id="cns_x",
                           authorization_details=[], now=clock.now(), ttl=600)
    header = pyjwt.get_unverified_header(token)
    assert header["kid"] != old_key.get("kid")      # mint signs with the new key, as it must
    from gateway.tokens import jose
    forged = jose.sign({"iss": flow.issuer, "aud": flow.gw.config.api_audience, "sub": "s",
                        "client_id": "bank-of-example", "consent_id": "cns_x",
                        "iat": clock.now(), "exp": clock.now() + 60, "jti": "j"},
                       old_key, typ="at+jwt")
    resp = flow.data(forged)
    assert resp.status_code == 401 and "retired" in resp.get_json()["detail"]
