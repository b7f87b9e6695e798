"""The mock department services: ImmD identity, the e-ME profile store, utility address proofs.

``Departments`` answers a lookup (path + JSON body → status + JSON body). ``create_app`` wraps
it in a small Flask app that ``cdeg departments serve`` runs on its own port; the embedded
gateway calls ``Departments`` in-process instead (see connectors/base.py). Lookups are POSTs
with the HKID in the body, never in a URL.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from flask import Flask, jsonify, request

RECORDS = Path(__file__).with_name("records.yaml")
AS_OF = {"immd": "2026-01-01T00:00:00Z", "eme": "2026-11-01T00:00:00Z",
         "utilities": "2026-10-15T00:00:00Z"}
ROUTES = {"/immd/v1/identity": "immd", "/eme/v1/profile": "eme",
          "/utilities/v1/address-proof": "utilities"}


class Departments:
    def __init__(self, records: dict | None = None):
        self.data = copy.deepcopy(records) if records is not None else \
            yaml.safe_load(RECORDS.read_text(encoding="utf-8"))

    def answer(self, path: str, body) -> tuple[int, dict]:
        store = ROUTES.get(path)
        if store is None:
            return 404, {"error": "no_such_service"}
        if not isinstance(body, dict) or not isinstance(body.get("hkid"), str):
            return 400, {"error": "bad_request", "detail": "hkid required in the JSON body"}
        record = self.data.get(store, {}).get(body["hkid"])
        if record is None:
            return 404, {"error": "not_found"}
        return 200, dict(record, as_of=AS_OF[store])


def create_app(records: dict | None = None) -> Flask:
    app = Flask("cdeg-departments")
    departments = Departments(records)

    @app.post("/<path:service>")
    def lookup(service: str):
        status, body = departments.answer("/" + service, request.get_json(silent=True))
        return jsonify(body), status

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
