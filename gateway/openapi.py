"""``GET /openapi.json``: OpenAPI 3.1 of ``/oauth``, ``/api`` and ``/cdi``, generated (apispec)
from the marshmallow schemas that validate the requests (``schemas/authorization.py``,
``schemas/cdi.py``) and describe the answers (``schemas/api.py``), with the security schemes
and the problem shapes (SPEC 8). Built once per issuer."""
from __future__ import annotations

import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from schemas import api
from schemas.authorization import AuthorizationDetailSchema
from schemas.cdi import QueryMessage

PROBLEM = {"application/problem+json": {"schema": "Problem"}}
OAUTH_ERROR = {"application/json": {"schema": "OAuthError"}}


def _problems(*statuses: int) -> dict:
    words = {400: "bad request (``errors`` names the fields)", 401: "not authenticated",
             403: "not allowed (outside the consent, another's token)", 404: "no such thing",
             405: "method not allowed", 406: "not acceptable", 409: "conflict",
             413: "too large", 415: "unsupported media type", 429: "too many requests",
             502: "a source failed", 503: "unavailable (Retry-After)", 504: "a source timed out"}
    return {str(s): {"description": words[s], "content": PROBLEM} for s in statuses}


def _oauth_errors(*statuses: int) -> dict:
    return {str(s): {"description": "RFC 6749 5.2 error", "content": OAUTH_ERROR}
            for s in statuses}


def _form(schema: str) -> dict:
    return {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": schema}}}


def _json(schema: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@functools.cache
def document(issuer: str) -> dict:
    spec = APISpec(title="CDEG — the Consented Data Exchange Gateway", version="1",
                   openapi_version="3.1.0", plugins=[MarshmallowPlugin()],
                   info={"description": "Consent-governed data exchange for Hong Kong "
                                        "departments and banks (OAuth 2.0 with PAR, PKCE and "
                                        "private_key_jwt; the data API; the CDI bridge)."},
                   servers=[{"url": issuer}])
    for name, schema in (("Problem", api.Problem), ("OAuthError", api.OAuthError),
                         ("AuthorizationDetail", AuthorizationDetailSchema),
                         ("ParForm", api.ParForm), ("ParAnswer", api.ParAnswer),
                         ("TokenForm", api.TokenForm), ("TokenAnswer", api.TokenAnswer),
                         ("TokenOnlyForm", api.TokenForm7009),
                         ("Introspection", api.Introspection), ("ItemValue", api.ItemValue),
                         ("DataAnswer", api.DataAnswer), ("FormsList", api.FormsList),
                         ("Prefilled", api.Prefilled), ("ConsentView", api.ConsentView),
                         ("CdiQueryMessage", QueryMessage), ("QueryAccepted", api.QueryAccepted),
                         ("QueryStatus", api.QueryStatus)):
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme("accessToken", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "an RFC 9068 access token (ES256, aud <issuer>/api) from /oauth/token"})
    spec.components.security_scheme("fiAssertion", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "the FI's own JWT, signed with its registered key: iss = sub = "
                       "client_id, aud <issuer>/cdi, exp at most 5 minutes ahead, a new jti"})
    spec.components.security_scheme("consent", {
        "type": "oauth2", "description": "authorization code with PAR (RFC 9126), PKCE S256 and "
                                         "private_key_jwt client authentication (RFC 7523)",
        "flows": {"authorizationCode": {"authorizationUrl": f"{issuer}/oauth/authorize",
                                        "tokenUrl": f"{issuer}/oauth/token", "scopes": {}}}})
    bearer = [{"accessToken": []}]

    spec.path("/oauth/par", operations={"post": {
        "summary": "Push an authorization request (RFC 9126)", "tags": ["oauth"],
        "requestBody": _form("ParForm"),
        "responses": {"201": _json("ParAnswer", "the request_uri for /oauth/authorize"),
                      **_oauth_errors(400, 401, 429, 503)}}})
    spec.path("/oauth/token", operations={"post": {
        "summary": "Exchange a code (PKCE) or a refresh token", "tags": ["oauth"],
        "requestBody": _form("TokenForm"),
        "responses": {"200": _json("TokenAnswer"), **_oauth_errors(400, 401, 429, 503)}}})
    spec.path("/oauth/revoke", operations={"post": {
        "summary": "Revoke a token (RFC 7009)", "tags": ["oauth"],
        "requestBody": _form("TokenOnlyForm"),
        "responses": {"200": {"description": "revoked, or unknown"},
                      **_oauth_errors(400, 401, 429, 503)}}})
    spec.path("/oauth/introspect", operations={"post": {
        "summary": "Introspect a token (RFC 7662)", "tags": ["oauth"],
        "requestBody": _form("TokenOnlyForm"),
        "responses": {"200": _json("Introspection"), **_oauth_errors(400, 401, 429, 503)}}})
    spec.path("/api/v1/data", operations={"get": {
        "summary": "The consented items, with provenance", "tags": ["api"], "security": bearer,
        "parameters": [{"name": "items", "in": "query", "required": False,
                        "schema": {"type": "string"},
                        "description": "comma-separated item ids within the consent"}],
        "responses": {"200": {"description": "the items (JSON), or the same signed (JWS)",
                              "content": {"application/json": {"schema": "DataAnswer"},
                                          "application/jwt": {"schema": {"type": "string"}}}},
                      **_problems(400, 401, 403, 406, 429, 502, 503, 504)}}})
    spec.path("/api/v1/forms", operations={"get": {
        "summary": "The form definitions", "tags": ["api"], "security": bearer,
        "responses": {"200": _json("FormsList"), **_problems(401, 503)}}})
    spec.path("/api/v1/forms/{form_id}/prefill", operations={"post": {
        "summary": "A form filled from the consented items", "tags": ["api"],
        "security": bearer,
        "parameters": [{"name": "form_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json("Prefilled"),
                      **_problems(400, 401, 403, 404, 429, 502, 503, 504)}}})
    spec.path("/api/v1/consents/{consent_id}", operations={"get": {
        "summary": "The requester's view of a consent it holds, with its signed receipt",
        "tags": ["api"], "security": bearer,
        "parameters": [{"name": "consent_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json("ConsentView"), **_problems(401, 404, 503)}}})
    spec.path("/cdi/v1/queries", operations={"post": {
        "summary": "Submit a signed CDI query (an FI)", "tags": ["cdi"],
        "description": "The body is a compact JWS signed by one of the FI's registered use:sig "
                       "keys (kid in its header); its payload is a CdiQueryMessage.",
        "requestBody": {"required": True, "content": {"application/jose": {
            "schema": {"type": "string"}}}},
        "responses": {"202": _json("QueryAccepted", "accepted (or the same query again)"),
                      **_problems(400, 401, 403, 409, 413, 415, 429, 503)}}})
    spec.path("/cdi/v1/queries/{query_id}", operations={"get": {
        "summary": "A query's status and sealed result (its FI only)", "tags": ["cdi"],
        "security": [{"fiAssertion": []}],
        "parameters": [{"name": "query_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json("QueryStatus"), **_problems(401, 404, 429, 503)}}})
    return spec.to_dict()
