"""An FI registers a signing and an encryption key and its allowed CDI callback URLs: https,
never a loopback, link-local or private address outside demo mode (http on a loopback host is
for demo mode only)."""
from __future__ import annotations

import json

import pytest
from jwcrypto import jwk

from gateway.requester_registry import RequesterError, check_callback_url, register
from tests.cdi_fi import new_fi_keys


def _register(gw, jwks, callbacks=(), kind="fi", demo=True):
    with gw.transaction() as conn:
        register(conn, gw.clock.now(), client_id="new-bank", name="New Bank", jwks=jwks,
                 kind=kind, redirect_uris=["https://new-bank.example/cb"],
                 callback_urls=list(callbacks), demo=demo)


def test_an_fi_registers_with_a_signing_and_an_encryption_key(gw):
    _, _, public = new_fi_keys("nb")
    _register(gw, public, ["https://new-bank.example/cdi/results"])
    with gw.db.connect() as conn:
        from gateway.requester_registry import get
        row = get(conn, "new-bank")
    assert row["callback_urls"] == ["https://new-bank.example/cdi/results"]
    assert gw.client_keys.encryption_key(row).get("kid") == "nb-enc"
    assert gw.client_keys.pinned(row, "nb-sig")[1] == "ES256"
    assert gw.client_keys.pinned(row, "nb-enc") is None    # an encryption key never signs


@pytest.mark.parametrize("use", ["sig", "enc"])
def test_an_fi_without_both_keys_is_refused(gw, use):
    _, _, public = new_fi_keys("nb")
    only = {"keys": [k for k in public["keys"] if k["use"] == use]}
    with pytest.raises(RequesterError, match="needs a signing key" if use == "enc"
                       else "needs an encryption key"):
        _register(gw, only)


def test_an_fi_key_with_private_material_is_refused(gw):
    sig, enc, public = new_fi_keys("nb")
    leaked = {"keys": [public["keys"][0], json.loads(enc.export_private())]}
    with pytest.raises(RequesterError, match="private key material"):
        _register(gw, leaked)


def test_an_encryption_key_must_be_p256_for_ecdh_es(gw):
    _, _, public = new_fi_keys("nb")
    rsa = json.loads(jwk.JWK.generate(kty="RSA", size=2048, kid="nb-rsa-enc",
                                      use="enc").export_public())
    with pytest.raises(RequesterError, match="EC P-256"):
        _register(gw, {"keys": [public["keys"][0], rsa]})


def test_a_department_registers_no_callback_urls(gw):
    _, _, public = new_fi_keys("nb")
    with pytest.raises(RequesterError, match="only an FI"):
        _register(gw, public, ["https://new-bank.example/cb"], kind="department")


@pytest.mark.parametrize("url", [
    "http://new-bank.example/cb",            # not https
    "https://127.0.0.1/cb", "https://localhost/cb", "https://[::1]/cb",  # loopback
    "https://169.254.169.254/latest",        # link-local (cloud metadata)
    "https://10.0.0.8/cb", "https://192.168.1.2/cb", "https://172.16.0.1/cb",  # private
    "https://[fd00::1]/cb", "https://[::ffff:10.0.0.1]/cb", "https://0.0.0.0/cb",
    "https://user:pw@bank.example/cb", "https://bank.example/cb#frag", "ftp://bank.example/",
])
def test_callback_urls_outside_demo_mode_are_https_to_public_hosts_only(url):
    with pytest.raises(RequesterError, match="callback URL"):
        check_callback_url(url, demo=False)


def test_demo_mode_admits_http_on_loopback_and_still_refuses_private_addresses():
    assert check_callback_url("http://127.0.0.1:9100/cdi/results", demo=True)
    assert check_callback_url("https://bank.example/cdi/results", demo=False)
    for url in ("http://10.0.0.8/cb", "https://192.168.1.2/cb", "http://bank.example/cb"):
        with pytest.raises(RequesterError):
            check_callback_url(url, demo=True)


def test_the_cli_registers_an_fi_with_its_callback_urls(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gateway.cli import main
    _, _, public = new_fi_keys("cli")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(public))
    monkeypatch.setenv("CDEG_INSTANCE_DIR", str(tmp_path / "instance"))
    runner = CliRunner()
    args = ["clients", "register", "--client-id", "cli-bank", "--name", "CLI Bank",
            "--jwks", str(jwks_file), "--redirect-uri", "https://cli-bank.example/cb",
            "--kind", "fi"]
    ok = runner.invoke(main, args + ["--callback-url", "https://cli-bank.example/cdi"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(main, args + ["--callback-url", "https://10.1.2.3/cdi"])
    assert refused.exit_code != 0 and "callback URL" in refused.output
    assert "Traceback" not in refused.output


@pytest.mark.parametrize("url", [
    "https://[64:ff9b::a9fe:a9fe]/cb",      # NAT64 of 169.254.169.254
    "https://[2002:a00:1::]/cb",            # 6to4 of 10.0.0.1
    "https://[::10.0.0.1]/cb",              # IPv4-compatible
    "https://[fec0::1]/cb",                 # site-local
])
def test_ipv6_addresses_carrying_internal_ipv4_ones_are_refused(url):
    with pytest.raises(RequesterError, match="callback URL"):
        check_callback_url(url, demo=False)


def test_outside_demo_a_push_never_goes_to_a_name_resolving_to_an_internal_address(
        gw, monkeypatch):
    import socket

    from gateway.jobs import push
    answers = {"inside.example": "10.1.2.3", "outside.example": "93.184.216.34"}

    def resolve(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], 0))]
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    strict = type("G", (), {"config": type("C", (), {"demo": False})()})()   # outside demo
    assert "private or loopback" in push._refused_destination(strict, "https://inside.example/x")
    assert "did not resolve" in push._refused_destination(strict, "https://nowhere.example/x")
    assert push._refused_destination(strict, "https://outside.example/x") is None
