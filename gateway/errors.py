"""Every error family mapped to HTTP, once.

    /oauth/* (JSON endpoints)   RFC 6749 section 5.2: {"error", "error_description"}
    /api/*, /cdi/*              RFC 9457 application/problem+json: type, title, status, detail, errors
    bearer failures             401 + WWW-Authenticate: Bearer error="invalid_token" (RFC 6750)
    citizen pages               an HTML page in the citizen's language
Nothing here ever shows a stack trace; an unexpected fault is logged (without personal data)
and answered 500 in the same shapes.
"""
from __future__ import annotations

import logging
import re

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from gateway.consent.lifecycle import ConsentError, ConsentNotFound
from gateway.exchange.release import ReleaseError
from gateway.oauth.errors import OAuthError
from gateway.requester_registry import UnknownRequester
from gateway.store.db import is_contention
from gateway.store.redis import RedisUnavailable
from gateway.throttle import Throttled
from gateway.tokens.errors import TokenError
from sqlalchemy.exc import DBAPIError, OperationalError
from redis.exceptions import RedisError

log = logging.getLogger("cdeg")

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
          413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class ApiProblem(Exception):
    """An /api or /cdi error, rendered as RFC 9457 problem details."""

    def __init__(self, status: int, slug: str, detail: str, *, errors: dict | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.errors, self.headers = errors, headers or {}


def _edge() -> str:
    path = request.path
    if path.startswith(("/api/", "/cdi/")):
        return "problem"
    if path.startswith("/oauth/") and path != "/oauth/authorize":
        return "oauth"
    if path.startswith(("/.well-known/", "/jwks.json", "/healthz", "/readyz")):
        return "problem"
    return "page"


def problem(status: int, slug: str, detail: str, *, errors=None, headers=None):
    from flask import current_app
    body = {"type": f"{current_app.config['CDEG_ISSUER']}/problems/{slug}",
            "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = "application/problem+json"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


_HEADER_SAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def bearer_refused(detail: str, status: int = 401, error: str = "invalid_token"):
    resp = problem(status, error.replace("_", "-"), detail)
    said = _HEADER_SAFE.sub("", detail)[:200]  # RFC 6750 3: error_description's characters
    resp.headers["WWW-Authenticate"] = f'Bearer error="{error}", error_description="{said}"'
    return resp


def _page(status: int, message: str):
    try:
        return render_template("error.html", status=status, message=message), status
    except Exception:  # noqa: BLE001 - the error page itself must never fail
        log.error("error page could not render (%s)", status)
        from markupsafe import escape
        return f"<!doctype html><title>Error</title><p>{escape(message)}</p>", status


def _generic(status: int, slug: str, detail: str, headers=None):
    edge = _edge()
    if edge == "oauth":
        error = {401: "invalid_client", 503: "temporarily_unavailable", 429: "slow_down",
                 500: "server_error"}.get(status, "invalid_request")
        resp = jsonify(error=error, error_description=detail)
        resp.status_code = status
    elif edge == "problem":
        resp = problem(status, slug, detail)
    else:
        body, code = _page(status, detail)
        from flask import make_response
        resp = make_response(body, code)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(OAuthError)
    def _oauth(exc: OAuthError):
        if _edge() == "page":
            return _page(exc.status, exc.description or exc.error)
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        resp.headers["Cache-Control"] = "no-store"
        for k, v in exc.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(ApiProblem)
    def _api(exc: ApiProblem):
        return problem(exc.status, exc.slug, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.errorhandler(TokenError)
    def _token(exc: TokenError):
        return bearer_refused(str(exc))

    @app.errorhandler(ReleaseError)
    def _release(exc: ReleaseError):
        if exc.reason == "invalid_token":
            return bearer_refused(exc.detail)
        if exc.reason == "outside_consent":
            resp = problem(403, "outside-consent", exc.detail, errors=exc.errors)
            resp.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope"'
            return resp
        if exc.reason == "source_unavailable":
            return problem(503, "source-unavailable", exc.detail, headers={"Retry-After": "10"})
        return problem(400, "bad-request", exc.detail, errors=exc.errors)

    @app.errorhandler(Throttled)
    def _throttled(exc: Throttled):
        return _generic(429, "too-many-requests", str(exc),
                        headers={"Retry-After": str(exc.retry_after)})

    @app.errorhandler(ConsentNotFound)
    def _consent_missing(exc):
        return _generic(404, "not-found", "no such consent")

    @app.errorhandler(ConsentError)
    def _consent(exc: ConsentError):
        return _generic(409, "consent-state", str(exc))

    @app.errorhandler(UnknownRequester)
    def _unknown_requester(exc):
        return _generic(400, "unknown-client", "unknown client")

    @app.errorhandler(RedisUnavailable)
    @app.errorhandler(RedisError)
    def _redis_down(exc):
        log.warning("redis unavailable: %s", type(exc).__name__)
        return _generic(503, "unavailable", "a backing service did not answer; try again shortly",
                        headers={"Retry-After": "5"})

    @app.errorhandler(DBAPIError)
    def _db_down(exc):
        if is_contention(exc):  # lost a race even after retries: busy, not down
            log.warning("database contention outlasted the retries: %s", type(exc.orig).__name__)
            return _generic(503, "contention", "a concurrent change to the same record won; "
                            "try again", headers={"Retry-After": "1"})
        if not isinstance(exc, OperationalError):
            return _unexpected(exc)
        log.warning("database unavailable: %s", type(exc).__name__)
        return _generic(503, "unavailable", "the database did not answer; try again shortly",
                        headers={"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        detail = {404: "not found", 405: "method not allowed",
                  413: "request body too large"}.get(status, exc.description or "bad request")
        resp = _generic(status, TITLES.get(status, "error").lower().replace(" ", "-"), detail)
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from flask import current_app
        # production logs name the fault only: exception text may carry personal data
        log.error("unexpected %s at %s %s (request %s)", type(exc).__name__, request.method,
                  request.path, g.get("request_id", "-"),
                  exc_info=not current_app.extensions["cdeg"].config.production)
        return _generic(500, "internal", "the gateway could not complete the request")
