"""`cdeg demo`: the whole story against a fresh embedded instance, each step printed.

A bank asks for identity and address, the citizen approves, the bank reads (the data API, then
its eKYC query through the CDI bridge, decrypted and verified with its own key), a department
pulls a pre-filled form, the citizen revokes, the next read is refused.
"""
from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
from pathlib import Path

from werkzeug.serving import make_server

from gateway import runtime

from .agent import FI, Citizen, Requester
from .seed import private_jwks, seed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StepFailed(Exception):
    pass


def play(say) -> int:
    """The story against a fresh embedded instance served in this process."""
    from gateway import create_app
    from gateway.config import Config

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cdeg-demo-") as tmp:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        config = Config(instance_dir=Path(tmp), issuer=base, env="demo")
        app = create_app(config)
        seed(runtime.of(app))
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            say(f"CDEG demo on a fresh embedded instance at {base}")
            return play_against(base, say)
        finally:
            server.shutdown()
            runtime.of(app).close()


def play_against(base: str, say) -> int:
    """The story against a gateway already running at ``base`` (seeded with the demo data),
    over HTTP only — the embedded one above, or a deployment (gunicorn, workers, departments
    as their own services)."""
    step = 0

    def ok(text: str):
        nonlocal step
        step += 1
        say(f"[{step}] {text}")

    try:
        bank = FI(base, "bank-of-example", private_jwks("bank-of-example"),
                  "http://127.0.0.1:9100/callback")
        detail = {"type": "cdeg_data", "purpose": "ekyc-account-opening", "access": "ongoing",
                  "duration": "P90D",
                  "data_items": ["identity.name_en", "identity.hkid", "identity.date_of_birth",
                                 "address.residential", "address.proof"]}
        resp, verifier = bank.push(detail)
        if resp.status_code != 201:
            raise StepFailed(f"PAR answered {resp.status_code}: {resp.text}")
        request_uri = resp.json()["request_uri"]
        ok(f"Bank of Example asks for {', '.join(detail['data_items'])} "
           f"(purpose {detail['purpose']}): request_uri issued")

        citizen = Citizen(base, "A123456(3)")
        page = citizen.open(bank.authorize_url(request_uri))
        if "Approve" not in page.text:
            raise StepFailed("the consent screen did not show")
        ok("CHAN Tai Man logs in with iAM Smart (HKID + code) and sees the consent screen")
        answer = citizen.decide(page, "approve")
        if "code" not in answer or answer.get("iss") != base:
            raise StepFailed(f"approval did not return a code: {answer}")
        ok("he approves; the bank's callback receives a code (and iss, RFC 9207)")

        resp = bank.token(answer["code"], verifier)
        if resp.status_code != 200:
            raise StepFailed(f"token answered {resp.status_code}: {resp.text}")
        tokens = resp.json()
        ok(f"the bank exchanges the code (PKCE + private_key_jwt): consent "
           f"{tokens['consent_id']}, access token valid {tokens['expires_in']} s")

        resp = bank.data(tokens["access_token"])
        if resp.status_code != 200:
            raise StepFailed(f"data answered {resp.status_code}: {resp.text}")
        items = resp.json()["items"]
        ok("the bank reads the data: " + json.dumps(
            {k: {"source": v["source"], "verified": v["verified"]} for k, v in items.items()},
            ensure_ascii=False))

        cdi_items = ["identity.name_en", "identity.hkid", "address.residential",
                     "address.proof"]
        resp = bank.submit(bank.message("ekyc-demo-0001", tokens["access_token"], cdi_items))
        if resp.status_code != 202 or resp.json().get("query_id") != "ekyc-demo-0001":
            raise StepFailed(f"the CDI query answered {resp.status_code}: {resp.text}")
        answer = bank.wait("ekyc-demo-0001")
        if answer.get("status") != "done":
            raise StepFailed(f"the CDI query ended {answer}")
        result = bank.open_result(answer["result"])
        if sorted(result["items"]) != sorted(cdi_items) \
                or result["items"]["identity.hkid"]["value"] != "A123456(3)":
            raise StepFailed(f"the CDI result does not hold the items asked for: "
                             f"{sorted(result['items'])}")
        proof = result["items"]["address.proof"]["value"]
        ok("the bank's eKYC query through the CDI bridge (a JWS it signed; the job released "
           "the data, route cdi): the result, a JWE to the bank's key, decrypted and its "
           "gateway signature verified — identity from ImmD, address proof "
           f"{proof.get('issuer')} {proof.get('bill_date')} verified={proof.get('verified')}")
        td = Requester(base, "transport-department", private_jwks("transport-department"),
                       "http://127.0.0.1:9101/callback")
        renewal = {"type": "cdeg_data", "purpose": "vehicle-licence-renewal",
                   "access": "once", "data_items": ["identity.name_en", "identity.hkid",
                                                     "address.residential", "contact.mobile"]}
        resp, td_verifier = td.push(renewal)
        if resp.status_code != 201:
            raise StepFailed(f"the Transport Department's PAR answered {resp.status_code}")
        answer = citizen.decide(citizen.open(td.authorize_url(resp.json()["request_uri"])),
                                "approve")
        resp = td.token(answer["code"], td_verifier) if "code" in answer else None
        if resp is None or resp.status_code != 200:
            raise StepFailed(f"the Transport Department got no token: {answer}")
        form = td.prefill(resp.json()["access_token"], "vehicle-licence-renewal")
        if form.status_code != 200:
            raise StepFailed(f"prefill answered {form.status_code}: {form.text}")
        filled = form.json()
        again = td.prefill(resp.json()["access_token"], "vehicle-licence-renewal")
        if again.status_code != 401:
            raise StepFailed(f"a second prefill on the once consent answered "
                             f"{again.status_code}, not 401")
        ok("the Transport Department pulls a pre-filled vehicle licence renewal (a once "
           "consent, ended by it): " + json.dumps(
               {f["name"]: f"{f['value']} ({f['source']})" for f in filled["fields"]
                if f["item"] != "identity.hkid"}, ensure_ascii=False)
           + f"; missing: {', '.join(filled['missing'])}")

        resp = citizen.revoke(tokens["consent_id"])
        if resp.status_code != 200 or 'data-status="revoked"' not in resp.text:
            raise StepFailed("revocation did not show as revoked on /me")
        ok("CHAN Tai Man revokes the consent on /me")

        resp = bank.data(tokens["access_token"])
        if resp.status_code != 401 or 'invalid_token' not in resp.headers.get("WWW-Authenticate", ""):
            raise StepFailed(f"the read after revocation answered {resp.status_code}")
        ok("the bank's next read is refused at once: 401 invalid_token")
        say("demo complete: consent → token → data → revoke → refused")
        return 0
    except (StepFailed, KeyError, ValueError, RuntimeError) as exc:
        say(f"FAILED after step {step}: {exc}")
        return 1
