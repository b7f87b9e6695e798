"""The CDI bridge's HTTP edge (SPEC 5): parse, call the domain, render. Errors are RFC 9457
problems (``http_errors.as_problem``)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from gateway import http_errors, requester_registry, runtime
from gateway.errors import ContentTooLarge, UnsupportedMediaType

from . import messages, queries

bp = Blueprint("cdi", __name__, url_prefix="/cdi/v1")
http_errors.use(bp, http_errors.as_problem)


@bp.post("/queries")
def submit():
    if request.mimetype != "application/jose":
        raise UnsupportedMediaType("send the query as a compact JWS with "
                                   "Content-Type: application/jose")
    if (request.content_length or 0) > messages.MAX_MESSAGE_BYTES:
        raise ContentTooLarge(f"a query message is at most {messages.MAX_MESSAGE_BYTES} bytes")
    raw = request.stream.read(messages.MAX_MESSAGE_BYTES + 1)
    if len(raw) > messages.MAX_MESSAGE_BYTES:
        raise ContentTooLarge(f"a query message is at most {messages.MAX_MESSAGE_BYTES} bytes")
    body = raw.decode("ascii", errors="replace")
    answer = queries.submit(runtime.current(), body)
    resp = jsonify(answer)
    resp.status_code = 202
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/queries/<query_id>")
def status(query_id: str):
    gw = runtime.current()
    with gw.reads.connect() as conn:
        requester = messages.verify_assertion(
            gw, request.headers.get("Authorization", ""),
            lambda client_id: requester_registry.get(conn, client_id))
    resp = jsonify(queries.view_for(gw, requester, query_id))
    resp.headers["Cache-Control"] = "no-store"
    return resp
