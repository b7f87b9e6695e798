"""examples/fi_client.py, the FI client a bank's developer copies, run as they would run it:
against a real `cdeg serve` (a subprocess on a free port, embedded instance in a tmp folder),
with an access token the demo bank obtained over HTTP through the OAuth flow."""
from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gateway.demo.agent import FI, Citizen

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fi_client.py"
BANK_KEYS = ROOT / "gateway" / "demo" / "requesters" / "bank-of-example.private.jwks.json"
ITEMS = ["identity.name_en", "identity.hkid", "identity.date_of_birth", "address.residential"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """`cdeg serve` as its own process (as tests/test_cli.py starts it), its output in a log
    file (a pipe nobody reads would fill up and stall the server); terminated, then killed
    if it lingers, whatever the tests did."""
    tmp = tmp_path_factory.mktemp("fi-example")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CDEG_")}
    environ["CDEG_INSTANCE_DIR"] = str(tmp / "instance")
    log = tmp / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], env=environ, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"cdeg serve exited {proc.returncode}:\n{_log_tail(log)}"
            try:
                if requests.get(base + "/healthz", timeout=0.5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no /healthz in 30 s:\n{_log_tail(log)}"
            time.sleep(0.1)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _consent(base: str) -> dict:
    """The demo bank's tokens for an ongoing eKYC consent CHAN Tai Man approved, obtained over
    HTTP as `cdeg demo` does (PAR, login + code, Approve, token exchange)."""
    bank = FI(base, "bank-of-example", json.loads(BANK_KEYS.read_text()),
              "http://127.0.0.1:9100/callback")
    resp, verifier = bank.push({"type": "cdeg_data", "purpose": "ekyc-account-opening",
                                "access": "ongoing", "duration": "P90D", "data_items": ITEMS})
    assert resp.status_code == 201, resp.text
    citizen = Citizen(base, "A123456(3)")
    page = citizen.open(bank.authorize_url(resp.json()["request_uri"]))
    assert "Approve" in page.text
    answer = citizen.decide(page, "approve")
    assert "code" in answer, answer
    resp = bank.token(answer["code"], verifier)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _run_example(base: str, access_token: str, *extra: str) -> subprocess.CompletedProcess:
    """The example as a developer runs it: its own process, only its command line."""
    return subprocess.run([sys.executable, str(EXAMPLE), "--gateway", base,
                           "--client-id", "bank-of-example", "--keys", str(BANK_KEYS),
                           "--access-token", access_token, "--items", ",".join(ITEMS), *extra],
                          capture_output=True, text=True, timeout=90, cwd=ROOT)


def test_the_example_fi_client_submits_polls_decrypts_and_verifies(gateway):
    base, log = gateway
    tokens = _consent(base)
    result = _run_example(base, tokens["access_token"], "--query-id", "example-q-1")
    assert result.returncode == 0, result.stderr + _log_tail(log)
    claims = json.loads(result.stdout)
    assert claims["iss"] == base and claims["aud"] == "bank-of-example"
    assert claims["query_id"] == "example-q-1"
    assert claims["consent_id"] == tokens["consent_id"]
    assert set(claims["items"]) == set(ITEMS)
    assert claims["items"]["identity.hkid"]["value"] == "A123456(3)"
    assert claims["items"]["identity.hkid"]["source"]      # provenance travels with each value


def test_the_example_fi_client_says_in_one_line_why_a_garbage_token_is_refused(gateway):
    base, _ = gateway
    result = _run_example(base, "not-a-token")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # the status, the problem's type (the access token, not the message) and its detail
    assert lines[0].startswith("fi_client: the query was refused (401 invalid-token): "), lines[0]
    assert len(lines[0]) > len("fi_client: the query was refused (401 invalid-token): ")
    assert "Traceback" not in result.stderr


def test_the_example_fi_client_uses_only_requests_jwcrypto_and_the_standard_library():
    tree = ast.parse(EXAMPLE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    outside = imported - set(sys.stdlib_module_names) - {"requests", "jwcrypto"}
    assert outside == set(), f"the example imports {outside}"
