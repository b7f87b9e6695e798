#!/usr/bin/env python3
"""An FI's client for CDEG's CDI bridge (SPEC section 5): copy it, it needs only ``requests``
and ``jwcrypto``.

The customer has already consented through the OAuth flow (PAR, authorize, token), so the FI
holds an access token. This script then:

1. signs a query message (compact JWS, ES256, with the FI's ``use: sig`` key) and POSTs it to
   ``<gateway>/cdi/v1/queries`` (``Content-Type: application/jose``); the gateway answers 202;
2. polls ``GET <gateway>/cdi/v1/queries/<query_id>``, each time with a fresh self-signed JWT
   (``iss = sub = client_id``, ``aud = <gateway>/cdi``) as its Bearer, until the query is
   ``done`` or ``failed``;
3. decrypts the result (JWE, ECDH-ES+A256KW / A256GCM) with the FI's ``use: enc`` key, checks
   the gateway's signature inside against ``<gateway>/jwks.json`` (ES256 only), checks ``iss``
   is the gateway and ``aud`` is this FI, and prints the verified claims as JSON on stdout.

Any failure ends with exit status 1 and one line on stderr (the gateway's ``detail`` when it
refused something).

``--gateway`` is the gateway's issuer exactly (e.g. ``http://127.0.0.1:8000``). ``--keys`` is
the FI's *private* JWKS, holding one ``use: sig`` EC P-256 key and one ``use: enc`` EC P-256 key
(their public halves are what the FI registered). To try it against ``cdeg serve --port 8000``,
use the demo bank's keys::

    python examples/fi_client.py --gateway http://127.0.0.1:8000 --client-id bank-of-example \\
        --keys gateway/demo/requesters/bank-of-example.private.jwks.json \\
        --access-token "$TOKEN" --items identity.name_en,identity.hkid
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from urllib.parse import quote

import requests
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import JWException

HTTP_TIMEOUT = 10          # seconds for each HTTP call
ASSERTION_LIFETIME = 120   # a polling assertion's life (the gateway accepts at most 300 s)


class Refused(Exception):
    """Something the FI's operator should read: a refusal, a failed query, a bad result."""


def _sign(claims: dict, key: jwk.JWK) -> str:
    token = jws.JWS(json.dumps(claims).encode())
    header = {"alg": "ES256", "kid": key.get("kid")}
    token.add_signature(key, alg="ES256", protected=json.dumps(header))
    return token.serialize(compact=True)


def _refusal(resp: requests.Response, what: str) -> Refused:
    """A Refused naming the status, the problem's type and its ``detail`` (RFC 9457)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        detail = str(body.get("detail") or body.get("title"))
        if isinstance(body.get("errors"), dict):     # bad fields, each named
            detail += " " + json.dumps(body["errors"], ensure_ascii=False)
    else:
        detail = " ".join(resp.text.split())[:200] or resp.reason
    kind = body.get("type", "").rsplit("/", 1)[-1] if isinstance(body, dict) else ""
    status = f"{resp.status_code} {kind}" if isinstance(kind, str) and kind else resp.status_code
    return Refused(f"{what} refused ({status}): {detail}")


def load_keys(path: str) -> tuple[jwk.JWK, jwk.JWK]:
    """The FI's signing key (``use: sig``) and decryption key (``use: enc``) from its private
    JWKS file."""
    try:
        with open(path, encoding="utf-8") as f:
            keys = [k for k in json.load(f)["keys"] if isinstance(k, dict) and "d" in k]
        sig = [jwk.JWK(**k) for k in keys if k.get("use") == "sig"]
        enc = [jwk.JWK(**k) for k in keys if k.get("use") == "enc"]
    except (OSError, ValueError, KeyError, TypeError, JWException) as exc:
        raise Refused(f"cannot read the keys in {path}: {type(exc).__name__}: {exc}") from exc
    if not sig or not enc:
        raise Refused(f"{path} needs a private 'use: sig' key and a private 'use: enc' key")
    if not sig[0].get("kid"):
        raise Refused(f"{path}: the signing key needs a kid (the one the FI registered)")
    return sig[0], enc[0]


def query_message(sig_key: jwk.JWK, client_id: str, query_id: str, access_token: str,
                  items: list[str], callback_url: str | None = None) -> str:
    """The query message: a compact JWS over the query, signed ES256 with the FI's key. A fresh
    ``jti`` every time (the gateway refuses a message replayed whole); resending the same
    ``query_id`` in a new message returns the same query, never a second fetch."""
    claims = {"query_id": query_id, "iat": int(time.time()), "jti": secrets.token_urlsafe(16),
              "access_token": access_token, "items": items, "iss": client_id}
    if callback_url:
        claims["callback_url"] = callback_url
    return _sign(claims, sig_key)


def poll_assertion(sig_key: jwk.JWK, client_id: str, gateway: str) -> str:
    """The FI's self-signed JWT that authenticates a poll: short-lived, new for every request."""
    now = int(time.time())
    return _sign({"iss": client_id, "sub": client_id, "aud": gateway + "/cdi", "iat": now,
                  "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(16)}, sig_key)


def submit(gateway: str, message: str) -> dict:
    """POST the signed message; the gateway's ``{"query_id", "status"}`` (202)."""
    resp = requests.post(gateway + "/cdi/v1/queries", data=message.encode("ascii"),
                         headers={"Content-Type": "application/jose"}, timeout=HTTP_TIMEOUT)
    if resp.status_code != 202:
        raise _refusal(resp, "the query was")
    return resp.json()


def poll_until_finished(gateway: str, client_id: str, sig_key: jwk.JWK, query_id: str,
                        timeout: float = 30.0, interval: float = 0.5) -> dict:
    """Poll the query until it is ``done`` (answered: its status document, with ``result``);
    a ``failed`` query, a refused poll or the timeout raise Refused."""
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(f"{gateway}/cdi/v1/queries/{quote(query_id, safe='')}",
                            timeout=HTTP_TIMEOUT,
                            headers={"Authorization": "Bearer " +
                                     poll_assertion(sig_key, client_id, gateway)})
        if resp.status_code != 200:
            raise _refusal(resp, "polling was")
        answer = resp.json()
        error = answer.get("error") or {}
        if answer.get("status") == "failed":
            raise Refused(f"query {query_id} failed ({error.get('code')}): {error.get('detail')}")
        if answer.get("status") == "done":
            if not answer.get("result"):
                raise Refused(f"query {query_id} is done but has no result: {error.get('detail')}")
            return answer
        if time.monotonic() > deadline:
            raise Refused(f"query {query_id} still {answer.get('status')} after {timeout:g} s")
        time.sleep(interval)


def open_result(gateway: str, client_id: str, enc_key: jwk.JWK, sealed: str) -> dict:
    """Decrypt the sealed result with the FI's key, verify the gateway's signature inside with
    the key ``/jwks.json`` publishes under its ``kid``; the claims, once ``iss`` (this gateway)
    and ``aud`` (this FI) hold. Keep ``inner`` (the signed JWS) if you need evidence."""
    outer = jwe.JWE()
    outer.allowed_algs = ["ECDH-ES+A256KW", "A256GCM"]   # nothing weaker, never "dir"
    outer.deserialize(sealed, key=enc_key)
    header = outer.jose_header
    if header.get("alg") != "ECDH-ES+A256KW" or header.get("enc") != "A256GCM" \
            or header.get("cty") != "JWT" or "zip" in header:
        raise Refused(f"the result's encryption header is not the expected one: {header}")
    inner = jws.JWS()
    inner.allowed_algs = ["ES256"]
    inner.deserialize(outer.payload.decode("ascii"))
    kid = inner.jose_header.get("kid")
    resp = requests.get(gateway + "/jwks.json", timeout=HTTP_TIMEOUT)
    if resp.status_code != 200:
        raise _refusal(resp, "fetching the gateway's keys was")
    key = jwk.JWKSet.from_json(resp.text).get_key(kid) if kid else None
    if key is None:
        raise Refused(f"the result is signed with kid {kid!r}, not published in /jwks.json")
    inner.verify(key, alg="ES256")
    if inner.jose_header.get("typ") != "cdeg-cdi-result+jwt":   # not another of its JWS
        raise Refused(f"the signed content is a {inner.jose_header.get('typ')!r}, not a CDI result")
    claims = json.loads(inner.payload)
    if claims.get("iss") != gateway:
        raise Refused(f"the result's iss is {claims.get('iss')!r}, not this gateway {gateway!r}")
    if claims.get("aud") != client_id:
        raise Refused(f"the result's aud is {claims.get('aud')!r}, not {client_id!r}")
    return claims


def main(argv: list[str] | None = None) -> int:
    """Submit, wait, open and print; 0 on success, 1 (one line on stderr) on any failure."""
    parser = argparse.ArgumentParser(description="Query CDEG's CDI bridge as an FI.")
    parser.add_argument("--gateway", required=True, help="the gateway's issuer URL")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--keys", required=True, help="the FI's private JWKS (sig + enc keys)")
    parser.add_argument("--access-token", required=True)
    parser.add_argument("--items", required=True, help="comma-separated item ids")
    parser.add_argument("--query-id", default=None, help="default: a random one")
    parser.add_argument("--callback-url", default=None)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
    args = parser.parse_args(argv)
    gateway = args.gateway.rstrip("/")
    items = [item.strip() for item in args.items.split(",") if item.strip()]
    query_id = args.query_id or "q-" + secrets.token_hex(8)
    try:
        sig_key, enc_key = load_keys(args.keys)
        message = query_message(sig_key, args.client_id, query_id, args.access_token, items,
                                args.callback_url)
        accepted = submit(gateway, message)
        if accepted.get("query_id") != query_id:
            raise Refused(f"the gateway accepted query {accepted.get('query_id')!r}, "
                          f"not {query_id!r}")
        answer = poll_until_finished(gateway, args.client_id, sig_key, query_id, args.timeout)
        claims = open_result(gateway, args.client_id, enc_key, answer["result"])
        if claims.get("query_id") != query_id:
            raise Refused(f"the result answers query {claims.get('query_id')!r}, not {query_id!r}")
    except Refused as exc:
        return _fail(str(exc))
    except requests.RequestException as exc:   # also a 2xx answer that is not JSON
        return _fail(f"talking to the gateway failed: {type(exc).__name__}: {exc}")
    except (JWException, ValueError) as exc:    # ValueError: a payload that is not JSON/ASCII
        return _fail(f"the result did not decrypt or verify: {type(exc).__name__}: {exc}")
    print(json.dumps(claims, indent=2, ensure_ascii=False))
    return 0


def _fail(message: str) -> int:
    print("fi_client: " + " ".join(message.split()), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
