"""Discovery and operations: RFC 8414 metadata, the JWKS, liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from gateway import http_errors, runtime

bp = Blueprint("wellknown", __name__)
http_errors.use(bp, http_errors.as_problem)



@bp.get("/.well-known/oauth-authorization-server")
def metadata():
    issuer = runtime.current().config.issuer
    resp = jsonify({
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "pushed_authorization_request_endpoint": f"{issuer}/oauth/par",
        "require_pushed_authorization_requests": True,
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "jwks_uri": f"{issuer}/jwks.json",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "authorization_details_types_supported": ["cdeg_data"],
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["en", "zh-HK"],
    })
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@bp.get("/jwks.json")
def jwks():
    resp = jsonify(runtime.current().keyring.jwks())
    resp.headers["Cache-Control"] = "public, max-age=60"
    resp.mimetype = "application/jwk-set+json"
    return resp


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    gw = runtime.current()
    checks = {"database": False, "redis": gw.redis.ping()}
    try:
        with gw.db.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["database"] = False
    ready = all(checks.values())
    resp = jsonify(status="ready" if ready else "unavailable",
                   checks={k: "ok" if v else "down" for k, v in checks.items()})
    resp.status_code = 200 if ready else 503
    if not ready:
        resp.headers["Retry-After"] = "5"
    return resp


@bp.get("/openapi.json")
def openapi():
    from gateway import openapi as document
    resp = jsonify(document.document(runtime.current().config.issuer))
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@bp.get("/metrics")
def metrics():
    from gateway import metrics as exported
    from gateway.errors import GatewayError
    gw = runtime.current()
    allowed = exported.allowed(gw, request.headers.get("Authorization", ""))
    if allowed is None:
        error = GatewayError("metrics are served with CDEG_METRICS_TOKEN set")
        error.status, error.problem = 404, "not-found"
        raise error
    if not allowed:
        error = GatewayError("send the metrics token as Authorization: Bearer")
        error.status, error.problem = 401, "unauthorized"
        error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        raise error
    return exported.exposition(gw), 200, {"Content-Type": exported.CONTENT_TYPE,
                                          "Cache-Control": "no-store"}
