"""The operator's `cdeg` command, run as an operator would."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from jwcrypto import jwk
from sqlalchemy import update

from gateway.cli import main
from gateway.store.db import audit_entries


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("CDEG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CDEG_INSTANCE_DIR", str(tmp_path / "instance"))
    monkeypatch.setenv("CDEG_ISSUER", "http://gateway.test")
    return tmp_path


@pytest.fixture
def production(env, monkeypatch, pg_schema, redis_prefix):
    """A production instance on PostgreSQL and Redis, its schema in place, no requesters."""
    from tests.conftest import REDIS_URL
    monkeypatch.setenv("CDEG_DATABASE_URL", pg_schema)
    monkeypatch.setenv("CDEG_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("CDEG_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("CDEG_DEPARTMENTS_URL", "http://departments.test")
    run("db", "upgrade")
    monkeypatch.setenv("CDEG_ENV", "production")
    monkeypatch.setenv("CDEG_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("CDEG_ISSUER", "https://cdeg.example")
    monkeypatch.setenv("CDEG_DATA_KEY", "cHJvZHVjdGlvbi1kYXRhLWtleS1vZi0zMi1ieXRlcyE")
    return monkeypatch


def run(*args, expect=0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.output


def _jwks_file(tmp_path, private=False) -> str:
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="new-1")
    doc = {"keys": [json.loads(key.export(private_key=private))]}
    path = tmp_path / ("private.json" if private else "jwks.json")
    path.write_text(json.dumps(doc))
    return str(path)


def test_db_upgrade_then_seed_then_register_a_requester(env):
    assert "schema up to date" in run("db", "upgrade")
    assert "bank-of-example" in run("seed", "--demo")
    out = run("clients", "register", "--client-id", "social-welfare", "--name", "Social Welfare",
              "--jwks", _jwks_file(env), "--redirect-uri", "https://swd.example/cb",
              "--kind", "department", "--policy", "policies/housing-department.yaml", expect=1)
    assert "governs 'housing-department'" in out


def test_register_refuses_private_keys_and_bad_policies_with_named_errors(env, tmp_path):
    run("db", "upgrade")
    out = run("clients", "register", "--client-id", "x-dept", "--name", "X", "--jwks",
              _jwks_file(tmp_path, private=True), "--redirect-uri", "https://x.example/cb",
              expect=1)
    assert "private key" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("requester: x-dept\npurposes:\n  p:\n    items: {required: [identity.shoe]}\n")
    out = run("clients", "register", "--client-id", "x-dept", "--name", "X", "--jwks",
              _jwks_file(tmp_path), "--redirect-uri", "https://x.example/cb", "--policy", str(bad),
              expect=1)
    assert "bad.yaml" in out and "purposes.p" in out


def test_a_registered_requester_is_seen_by_a_running_gateway_without_restart(env, tmp_path):
    from gateway import create_app
    from gateway.config import Config
    from gateway.demo.agent import client_assertion, pkce_pair
    app = create_app(Config.from_env())
    client = app.test_client()
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="k1")
    jwks = tmp_path / "k.json"
    jwks.write_text(json.dumps({"keys": [key.export_public(as_dict=True)]}))
    policy = tmp_path / "new-bank.yaml"
    policy.write_text("""requester: new-bank
purposes:
  kyc:
    description: {en: "Know your customer", zh-HK: "認識你的客戶"}
    legal_basis: consent
    items: {required: [identity.name_en], optional: []}
    access: [once]
    max_duration: P30D
    retention: P7Y
""")
    run("clients", "register", "--client-id", "new-bank", "--name", "New Bank", "--kind", "department",
        "--jwks", str(jwks), "--redirect-uri", "https://nb.example/cb", "--policy", str(policy))
    _, challenge = pkce_pair()
    resp = client.post("/oauth/par", data={
        "response_type": "code", "client_id": "new-bank", "redirect_uri": "https://nb.example/cb",
        "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps([{"type": "cdeg_data", "purpose": "kyc",
                                              "data_items": ["identity.name_en"], "access": "once"}]),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(key, "new-bank", "http://gateway.test")})
    assert resp.status_code == 201, resp.get_json()
    app.extensions["cdeg"].close()


def test_seed_is_refused_in_production(production):
    assert "refused" in run("seed", "--demo", expect=1)


def test_production_without_a_secret_refuses_to_start(env, monkeypatch):
    monkeypatch.setenv("CDEG_ENV", "production")
    assert "CDEG_SECRET_KEY" in run("db", "upgrade", expect=1)


def test_production_without_a_data_key_refuses_to_start_naming_it(production):
    production.delenv("CDEG_DATA_KEY")
    said = run("doctor", expect=1)
    assert "CDEG_DATA_KEY" in said and "Traceback" not in said


def test_keys_rotate_data_reseals_every_citizen(env):
    run("seed", "--demo")
    said = run("keys", "rotate-data")
    assert "now seals; 1 citizens re-sealed" in said and "Traceback" not in said


def test_keys_rotate_adds_a_key(env):
    run("keys", "rotate")      # on a fresh instance: the first key, then the rotation
    folder = env / "instance" / "keys"
    before = len(list(folder.glob("*.pem")))
    assert "new signing key" in run("keys", "rotate")
    assert "nothing to prune" in run("keys", "prune")     # retired today: kept for years
    assert len(list(folder.glob("*.pem"))) == before + 1


def test_audit_verify_passes_then_finds_the_tampered_entry(env):
    from gateway.config import Config
    from gateway.instance import Gateway
    run("seed", "--demo")
    from tests.flow import Flow
    from gateway import create_app
    app = create_app(Config.from_env())
    Flow(app).tokens()
    assert "intact: 3 entries sequenced" in run("audit", "verify")
    kept = env / "kept-checkpoint.jwt"   # an auditor keeps one
    kept.write_text(run("audit", "checkpoint"))
    assert "extends the kept checkpoint" in run("audit", "verify", "--against", str(kept))
    assert "only entries added since it" in run("audit", "verify", "--against", str(kept),
                                                "--only-new")
    gw = Gateway(Config.from_env())
    with gw.db.begin() as conn:
        conn.execute(update(audit_entries).where(audit_entries.c.id == 2)
                     .values(entry=audit_entries.c.entry + " "))
    assert "audit entry 2" in run("audit", "verify", expect=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_an_embedded_gateway_with_demo_data(env):
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if k != "CDEG_ISSUER"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/healthz", timeout=0.5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert requests.get(base + "/readyz", timeout=2).status_code == 200
        meta = requests.get(base + "/.well-known/oauth-authorization-server", timeout=2).json()
        assert meta["issuer"] == base
        assert (env / "instance" / "cdeg.sqlite3").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "seeded demo data" in out


def test_demo_plays_the_story_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "demo"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ("approves", "reads the data", "pulls a pre-filled vehicle licence renewal",
                 '"owner_surname": "CHAN (immd)"', "through the CDI bridge",
                 "gateway signature verified", "revokes", "refused at once", "demo complete"):
        assert text in result.stdout


def test_production_refuses_to_start_with_demo_requesters(production):
    from gateway.config import Config, ConfigError
    from gateway.instance import Gateway
    production.setenv("CDEG_ENV", "demo")
    run("seed", "--demo")
    production.setenv("CDEG_ENV", "production")
    with pytest.raises(ConfigError, match="demo requester"):
        Gateway(Config.from_env())


# -- refusals are one line on stderr, never a traceback (security review, issue 5, item 14) --

def refused(*args) -> str:
    """Run the command, expect exit 1 and one line `cdeg: <reason>` on stderr; answer it."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdeg: "), result.stderr
    return lines[0]


def _b64(number: int, size: int | None = None) -> str:
    from jwcrypto.common import base64url_encode
    size = size or max(1, (number.bit_length() + 7) // 8)
    return base64url_encode(number.to_bytes(size, "big"))


def _ec_off_curve() -> dict:
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="k").export_public(as_dict=True)
    return {**key, "y": _b64(1, 32)}          # x from a real key, y = 1: not on P-256


def _rsa(e: int | None = None, size: int = 2048) -> dict:
    key = jwk.JWK.generate(kty="RSA", size=size, kid="k").export_public(as_dict=True)
    return {**key, "e": _b64(e)} if e is not None else key


def _okp_not_a_point() -> dict:
    from jwcrypto.common import base64url_encode
    return {"kty": "OKP", "crv": "Ed25519", "kid": "k",
            "x": base64url_encode((2).to_bytes(32, "little"))}   # y = 2 does not decode


BAD_KEYS = {
    "ec-point-not-on-p256": (_ec_off_curve, "not on the P-256 curve"),
    "ec-short-coordinate": (lambda: {**_ec_off_curve(), "x": _b64(5, 31)}, "x: must be 32 bytes"),
    "rsa-exponent-1": (lambda: _rsa(e=1), "public exponent e must be odd and at least 3"),
    "rsa-exponent-even": (lambda: _rsa(e=65536), "public exponent e must be odd"),
    "rsa-1024-bits": (lambda: _rsa(size=1024), "at least 2048 bits"),
    "okp-31-bytes": (lambda: {**_okp_not_a_point(), "x": _b64(7, 31)}, "x: must be 32 bytes"),
    "okp-not-a-point": (_okp_not_a_point, "not an Ed25519 point"),
}


@pytest.mark.parametrize("case", BAD_KEYS)
def test_register_refuses_an_unusable_public_key_with_a_one_line_reason(env, case):
    make, why = BAD_KEYS[case]
    jwks = env / "jwks.json"
    jwks.write_text(json.dumps({"keys": [make()]}))
    line = refused("clients", "register", "--client-id", "x-bank", "--name", "X", "--jwks",
                   str(jwks), "--redirect-uri", "https://x.example/cb")
    assert "jwks.keys[0]" in line and why in line, line


def test_register_refuses_a_redirect_uri_that_would_inject_into_the_csp(env):
    uri = "https://a.example;report-uri https://evil.example/r;sandbox;/cb"
    line = refused("clients", "register", "--client-id", "x-bank", "--name", "X", "--jwks",
                   _jwks_file(env), "--redirect-uri", uri)
    assert f"redirect URI {uri!r}" in line


def test_register_accepts_http_loopback_in_demo_mode(env):
    assert "registered x-dept" in run("clients", "register", "--client-id", "x-dept", "--name",
                                      "X", "--jwks", _jwks_file(env), "--redirect-uri",
                                      "http://127.0.0.1:9200/cb")


def test_production_refuses_http_loopback_redirect_uris_and_takes_https(production, env):
    line = refused("clients", "register", "--client-id", "x-dept", "--name", "X", "--jwks",
                   _jwks_file(env), "--redirect-uri", "http://127.0.0.1:9200/cb")
    assert "'http://127.0.0.1:9200/cb'" in line and "demo mode only" in line
    assert "registered x-dept" in run("clients", "register", "--client-id", "x-dept", "--name",
                                      "X", "--jwks", _jwks_file(env), "--redirect-uri",
                                      "https://x.example/cb")


def test_production_refusal_of_demo_requesters_is_one_line_on_stderr_not_a_traceback(production,
                                                                                     env):
    production.setenv("CDEG_ENV", "demo")
    run("seed", "--demo")
    production.setenv("CDEG_ENV", "production")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "clients", "register", "--client-id", "x-dept",
         "--name", "X", "--jwks", _jwks_file(env), "--redirect-uri", "https://x.example/cb"],
        env=dict(os.environ), cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("cdeg: production instance holds demo requester"), \
        result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_an_unreadable_or_malformed_file_is_named_in_one_line(env, monkeypatch):
    jwks = _jwks_file(env)
    broken = env / "broken.json"
    broken.write_text("{not json")
    assert "broken.json: not JSON" in refused("clients", "register", "--client-id", "x", "--name",
                                              "X", "--jwks", str(broken), "--redirect-uri",
                                              "https://x.example/cb")
    policy = env / "policy.yaml"
    policy.write_text("requester: x\npurposes: [\n  - {")
    assert "policy.yaml" in refused("clients", "register", "--client-id", "x", "--name", "X",
                                    "--jwks", jwks, "--redirect-uri", "https://x.example/cb",
                                    "--policy", str(policy))
    from pathlib import Path
    real = Path.read_text

    def unreadable(self, *args, **kwargs):
        if self.name == "jwks.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", unreadable)
    line = refused("clients", "register", "--client-id", "x", "--name", "X", "--jwks", jwks,
                   "--redirect-uri", "https://x.example/cb")
    assert "Permission denied" in line and "jwks.json" in line


def test_a_deeply_nested_jwks_file_is_one_line_not_a_traceback(env):
    path = env / "nested.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    line = refused("clients", "register", "--client-id", "x-dept", "--name", "X", "--jwks",
                   str(path), "--redirect-uri", "https://x.example/cb")
    assert "nested.json" in line


def test_commands_on_a_postgresql_database_without_its_schema_say_so_in_one_line(
        env, monkeypatch, pg_schema):
    monkeypatch.setenv("CDEG_DATABASE_URL", pg_schema)     # `cdeg db upgrade` never ran
    line = refused("audit", "verify")
    assert line.startswith("cdeg: database:") and "SELECT" not in line


def test_audit_verify_holds_a_checkpoint_served_under_another_issuer(env, monkeypatch):
    """`cdeg serve --port P` signs checkpoints as http://127.0.0.1:P; the operator's
    `cdeg audit verify` later runs with its own default issuer — and still checks them."""
    from gateway import create_app
    from gateway.config import Config
    from tests.flow import Flow
    run("seed", "--demo")
    app = create_app(Config.from_env(issuer="http://127.0.0.1:8777"))
    Flow(app).tokens()
    assert app.test_client().get("/log/v1/checkpoint").status_code == 200
    monkeypatch.delenv("CDEG_ISSUER")
    assert "the latest checkpoint (iat" in run("audit", "verify")
