"""The mock department services: ImmD identity, the e-ME profile store, utility address proofs.

One small Flask app; ``cdeg departments serve`` runs it on its own port, the embedded gateway
mounts it in-process. Lookups are POSTs with the HKID in the body (never in a URL).
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from flask import Flask, jsonify, request

RECORDS = Path(__file__).with_name("records.yaml")
AS_OF = {"immd": "2026-01-01T00:00:00Z", "eme": "2026-11-01T00:00:00Z",
         "utilities": "2026-10-15T00:00:00Z"}


def create_app(records: dict | None = None) -> Flask:
    app = Flask("cdeg-departments")
    data = copy.deepcopy(records) if records is not None else \
        yaml.safe_load(RECORDS.read_text(encoding="utf-8"))

    def hkid_from_body():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("hkid"), str):
            return None
        return body["hkid"]

    def lookup(store: str):
        hkid = hkid_from_body()
        if hkid is None:
            return jsonify(error="bad_request", detail="hkid required in the JSON body"), 400
        record = data.get(store, {}).get(hkid)
        if record is None:
            return jsonify(error="not_found"), 404
        return jsonify(dict(record, as_of=AS_OF[store]))

    @app.post("/immd/v1/identity")
    def immd_identity():
        return lookup("immd")

    @app.post("/eme/v1/profile")
    def eme_profile():
        return lookup("eme")

    @app.post("/utilities/v1/address-proof")
    def utility_address_proof():
        return lookup("utilities")

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
