"""The gateway's errors (``gateway/errors.py``) rendered as HTTP, once, in the shape of the edge
that served the request. Each blueprint registers its renderer:

    oauth (JSON endpoints)           RFC 6749 section 5.2: {"error", "error_description"}
    api, cdi, wellknown              RFC 9457 application/problem+json: type, title, status,
                                     detail, errors; bearer failures add WWW-Authenticate (RFC 6750)
    web (citizen pages, authorize)   an HTML page in the citizen's language

A request no route matched (a 404 or 405 from routing) belongs to no blueprint; it is answered
in the shape of the blueprint whose routes share its first path segment, else as a page.
Nothing here ever shows a stack trace; an unexpected fault is logged (without personal data)
and answered 500 in the same shapes.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

from flask import Blueprint, Flask, current_app, g, jsonify, make_response, render_template, request

from gateway import runtime
from markupsafe import escape
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from gateway.errors import DatabaseUnavailable, GatewayError, Throttled
from gateway.oauth.errors import OAuthError

log = logging.getLogger("cdeg")

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
          413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
          503: "Service Unavailable", 504: "Gateway Timeout"}
HTTP_DETAILS = {404: "not found", 405: "method not allowed", 413: "request body too large"}
HTTP_MESSAGES = {404: "error.not_found", 405: "error.method", 413: "error.too_large",
                 429: "error.too_many"}
# Edges whose blueprints are not built yet answer in their SPEC shape all the same (SPEC 8)
UNBUILT_EDGES: dict[str, str] = {}
# RFC 6750 3 / RFC 6749 5.2: the characters an error_description may hold
_HEADER_SAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
# An OAuth JSON endpoint's code for an error that is not an OAuthError
_OAUTH_CODES = {401: "invalid_client", 429: "slow_down", 502: "temporarily_unavailable",
                503: "temporarily_unavailable", 504: "temporarily_unavailable",
                500: "server_error"}

Renderer = Callable[[GatewayError], object]


def _from_http(exc: HTTPException) -> GatewayError:
    """A werkzeug HTTP error (404, 405, 413, the CSRF 400, ...) as one of ours."""
    status = exc.code or 500
    error = GatewayError(HTTP_DETAILS.get(status, exc.description or "bad request"))
    error.status = status
    error.problem = TITLES.get(status, "error").lower().replace(" ", "-")
    error.message = HTTP_MESSAGES.get(status, "error.bad_request" if status < 500
                                      else "error.internal")
    if status == 405 and getattr(exc, "valid_methods", None):
        error.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return error


def _with_headers(resp, exc: GatewayError):
    for name, value in exc.headers.items():
        resp.headers[name] = value
    return resp


def as_problem(exc: GatewayError):
    body = {"type": f"{current_app.config['CDEG_ISSUER']}/problems/{exc.problem}",
            "title": TITLES.get(exc.status, "Error"), "status": exc.status, "detail": exc.detail}
    if exc.errors:
        body["errors"] = exc.errors
    resp = jsonify(body)
    resp.status_code = exc.status
    resp.mimetype = "application/problem+json"
    if exc.bearer_error == "invalid_token":
        said = _HEADER_SAFE.sub("", exc.detail)[:200]
        resp.headers["WWW-Authenticate"] = (f'Bearer error="{exc.bearer_error}", '
                                            f'error_description="{said}"')
    elif exc.bearer_error:
        resp.headers["WWW-Authenticate"] = f'Bearer error="{exc.bearer_error}"'
    return _with_headers(resp, exc)


def as_oauth(exc: GatewayError):
    if isinstance(exc, OAuthError):
        body = exc.body()
    else:
        body = {"error": _OAUTH_CODES.get(exc.status, "invalid_request"),
                "error_description": _HEADER_SAFE.sub("?", exc.detail)[:500]}
    resp = jsonify(body)
    resp.status_code = exc.status
    resp.headers["Cache-Control"] = "no-store"
    return _with_headers(resp, exc)


def as_page(exc: GatewayError):
    from gateway.web.i18n import translator
    from gateway.web.pages import lang
    try:
        t = translator(lang())[0]
        wait = exc.retry_after if isinstance(exc, Throttled) else \
            int(exc.headers.get("Retry-After", "60"))
        message = t(exc.message).format(minutes=-(-wait // 60))
        # an OAuth refusal (on /oauth/authorize) keeps its words too, for whoever integrates
        # the requester; they carry no personal data
        detail = exc.detail if isinstance(exc, OAuthError) else None
        resp = make_response(render_template("error.html", status=exc.status, message=message,
                                             detail=detail), exc.status)
    except Exception:  # noqa: BLE001 - the error page itself must never fail
        log.error("error page could not render (%s)", exc.status)
        resp = make_response(f"<!doctype html><title>Error</title><p>{escape(exc.detail)}</p>",
                             exc.status)
    return _with_headers(resp, exc)


def _unexpected(exc: Exception) -> GatewayError:
    # production logs name the fault only: exception text may carry personal data
    log.error("unexpected %s at %s %s (request %s)", type(exc).__name__, request.method,
              request.path, g.get("request_id", "-"),
              exc_info=not runtime.current().config.production)
    return GatewayError()


def _pool_exhausted(exc: PoolTimeout) -> GatewayError:
    """No pooled connection came free in time: busy, not broken (SQLAlchemy raises it from the
    pool, outside the engine's error hook, so it is mapped here)."""
    log.warning("database pool exhausted")
    return DatabaseUnavailable()


def _handlers(render: Renderer) -> dict:
    return {GatewayError: render,
            HTTPException: lambda exc: render(_from_http(exc)),
            PoolTimeout: lambda exc: render(_pool_exhausted(exc)),
            Exception: lambda exc: render(_unexpected(exc))}


def use(bp: Blueprint, render: Renderer) -> None:
    """Answer every error raised in ``bp``'s views with ``render``."""
    bp.cdeg_render = render
    for kind, handler in _handlers(render).items():
        bp.register_error_handler(kind, handler)


def _first_segment(path: str) -> str:
    return path.split("/")[1] if path.count("/") > 1 else path.strip("/")


def init_app(app: Flask) -> None:
    """Requests that reached no view. A path some route has, asked with another method (405),
    is answered in the shape of that route's blueprint; an unknown path (404) in the shape of
    the blueprint with the most routes under its first segment (``/api/v1/nothing`` is a
    problem document), else as a page."""
    counted: dict[str, dict[Renderer, int]] = {}
    for rule in app.url_map.iter_rules():
        render = getattr(app.blueprints.get(rule.endpoint.rpartition(".")[0]), "cdeg_render", None)
        first = _first_segment(rule.rule)
        if render is not None and first and not first.startswith("<"):
            votes = counted.setdefault(first, {})
            votes[render] = votes.get(render, 0) + 1
    owners = {first: max(votes, key=votes.get) for first, votes in counted.items()}

    def owner() -> Renderer:
        adapter = app.url_map.bind_to_environ(request.environ)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            try:
                endpoint, _ = adapter.match(request.path, method=method)
            except HTTPException:
                continue
            bp = app.blueprints.get(endpoint.rpartition(".")[0])
            return getattr(bp, "cdeg_render", as_page)
        first = _first_segment(request.path)
        if UNBUILT_EDGES.get(first) == "problem":
            return as_problem
        return owners.get(first, as_page)

    def render(exc: GatewayError):
        return owner()(exc)

    for kind, handler in _handlers(render).items():
        app.register_error_handler(kind, handler)
