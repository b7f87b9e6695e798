"""/api/v1/forms: the form definitions, and a department's pre-filled form (SPEC section 4)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from gateway import http_errors, rate_limits, runtime
from gateway.errors import BadRequest, MethodNotAllowed
from gateway.exchange import prefill

from .bearer import current_claims

bp = Blueprint("forms", __name__, url_prefix="/api/v1/forms")
http_errors.use(bp, http_errors.as_problem)


def _answer(body: dict):
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("")
def listing():
    if request.method != "GET":   # HEAD
        raise MethodNotAllowed("use GET", headers={"Allow": "GET"})
    claims = current_claims()
    rate_limits.charge(runtime.current(), "client", claims["client_id"])
    return _answer({"forms": prefill.listing()})


@bp.post("/<form_id>/prefill")
def prefill_form(form_id: str):
    claims = current_claims()
    gw = runtime.current()
    rate_limits.charge(gw, "client", claims["client_id"])
    if request.args:
        raise BadRequest("a prefill takes no query parameters",
                         errors={k: ["unknown parameter"] for k in sorted(request.args)})
    return _answer(prefill.prefill(gw, claims, form_id))
