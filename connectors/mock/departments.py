"""The mock department services: ImmD identity, the e-ME profile store, utility address proofs.

``Departments`` answers a lookup (path + JSON body → status + JSON body). e-ME is the citizen's
own store: ``/eme/v1/profile/update`` replaces a citizen's self-declared items, kept in a JSON
file (``store``) beside the demo records so an edit outlives a restart. ``create_app`` wraps
it in a small Flask app that ``cdeg departments serve`` runs on its own port; the embedded
gateway calls ``Departments`` in-process instead (see connectors/base.py). Lookups are POSTs
with the HKID in the body, never in a URL.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from flask import Flask, jsonify, request

RECORDS = Path(__file__).with_name("records.yaml")
AS_OF = {"immd": "2026-01-01T00:00:00Z", "eme": "2026-11-01T00:00:00Z",
         "utilities": "2026-10-15T00:00:00Z"}
ROUTES = {"/immd/v1/identity": "immd", "/eme/v1/profile": "eme",
          "/utilities/v1/address-proof": "utilities"}
UPDATE = "/eme/v1/profile/update"
BILL = "/utilities/v1/bill"                  # a bill named by the citizen: issuer + account
PROOF = "/eme/v1/profile/proof"              # the outcome of checking it, kept by e-ME
PROFILE_KEYS = ("mobile", "email", "address")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Departments:
    def __init__(self, records: dict | None = None, store: Path | None = None):
        self.data = copy.deepcopy(records) if records is not None else \
            yaml.safe_load(RECORDS.read_text(encoding="utf-8"))
        self.store = Path(store) if store else None
        self._writing = threading.Lock()
        if self.store and self.store.exists():
            kept = json.loads(self.store.read_text(encoding="utf-8"))
            for service in ("eme", "utilities"):
                self.data.setdefault(service, {}).update(kept.get(service, {}))

    def _update_profile(self, body: dict) -> tuple[int, dict]:
        profile = body.get("profile")
        if not isinstance(profile, dict) or set(profile) != set(PROFILE_KEYS):
            return 400, {"error": "bad_request",
                         "detail": f"profile must hold exactly {', '.join(PROFILE_KEYS)}"}
        with self._writing:
            profiles = self.data.setdefault("eme", {})
            old = profiles.get(body["hkid"], {})
            moved = profile["address"] != old.get("address")
            record = {**profile, "address_verified_by": None if moved
                      else old.get("address_verified_by"), "as_of": _now()}
            profiles[body["hkid"]] = record
            proof = self.data.get("utilities", {}).get(body["hkid"])
            if moved and proof:      # the bill proved the old address, not this one
                proof["verified"] = False
            self._keep()
        return 200, dict(record)

    def _bill(self, body: dict) -> tuple[int, dict]:
        """A bill of the issuer's, for this customer (a bill in another's name is not found)."""
        bill = self.data.get("bills", {}).get(body.get("issuer"), {}).get(
            body.get("account_reference"))
        if bill is None or bill["hkid"] != body["hkid"]:
            return 404, {"error": "not_found"}
        today = datetime.now(timezone(timedelta(hours=8))).date()    # Hong Kong's date
        dated = (today - timedelta(days=bill["days_ago"])).isoformat()
        account = body["account_reference"]
        return 200, {"issuer": body["issuer"], "account_reference": "****" + account[-4:],
                     "bill_date": dated, "address": bill["address"], "as_of": dated + "T00:00:00Z"}

    def _record_proof(self, body: dict) -> tuple[int, dict]:
        """Keep a checked proof: the utilities' address-proof record for the citizen, and, when
        it backs the e-ME address, that address marked as backed by the issuer."""
        proof = body.get("proof")
        if not isinstance(proof, dict) or set(proof) != {"issuer", "account_reference",
                                                         "bill_date", "verified"}:
            return 400, {"error": "bad_request", "detail": "proof must hold issuer, "
                                                           "account_reference, bill_date, verified"}
        with self._writing:
            self.data.setdefault("utilities", {})[body["hkid"]] = dict(proof, as_of=_now())
            profile = self.data.setdefault("eme", {}).setdefault(
                body["hkid"], {"mobile": None, "email": None, "address": None})
            profile["address_verified_by"] = proof["issuer"] if proof["verified"] else None
            self._keep()
        return 200, dict(proof, as_of=_now())

    def _keep(self) -> None:
        """Write the citizens' e-ME profiles and proofs to the store, whole or not at all."""
        if self.store is None:
            return
        self.store.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.store.parent, prefix=".eme-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"eme": self.data["eme"], "utilities": self.data.get("utilities", {})},
                      out, ensure_ascii=False)
        os.replace(tmp, self.store)

    def answer(self, path: str, body) -> tuple[int, dict]:
        writes = {UPDATE: self._update_profile, BILL: self._bill, PROOF: self._record_proof}
        if path in writes:
            if not isinstance(body, dict) or not isinstance(body.get("hkid"), str):
                return 400, {"error": "bad_request", "detail": "hkid required in the JSON body"}
            return writes[path](body)
        store = ROUTES.get(path)
        if store is None:
            return 404, {"error": "no_such_service"}
        if not isinstance(body, dict) or not isinstance(body.get("hkid"), str):
            return 400, {"error": "bad_request", "detail": "hkid required in the JSON body"}
        record = self.data.get(store, {}).get(body["hkid"])
        if record is None:
            return 404, {"error": "not_found"}
        return 200, {"as_of": AS_OF[store], **record}


def create_app(records: dict | None = None, store: Path | None = None) -> Flask:
    app = Flask("cdeg-departments")
    departments = Departments(records, store)

    @app.post("/<path:service>")
    def lookup(service: str):
        status, body = departments.answer("/" + service, request.get_json(silent=True))
        return jsonify(body), status

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
