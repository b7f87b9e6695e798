"""GET /openapi.json (SPEC 10): valid OpenAPI 3.1 of /oauth, /api and /cdi, generated from the
marshmallow schemas; the gateway's real answers hold to the schemas it publishes."""
from __future__ import annotations

import jsonschema
from openapi_spec_validator import validate

from tests.cdi_fi import FIClient


def document(flow) -> dict:
    resp = flow.requester.get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return resp.get_json()


def conforms(doc: dict, schema: str, body) -> None:
    jsonschema.validate(body, {"$schema": "https://json-schema.org/draft/2020-12/schema",
                               "components": doc["components"],
                               "$ref": f"#/components/schemas/{schema}"})


def test_the_document_is_valid_openapi_31_of_oauth_api_and_cdi(flow):
    doc = document(flow)
    validate(doc)
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": flow.issuer}]
    for path in ("/oauth/par", "/oauth/token", "/oauth/revoke", "/oauth/introspect",
                 "/api/v1/data", "/api/v1/forms", "/api/v1/forms/{form_id}/prefill",
                 "/api/v1/consents/{consent_id}", "/cdi/v1/queries",
                 "/cdi/v1/queries/{query_id}"):
        assert path in doc["paths"], path
    schemes = doc["components"]["securitySchemes"]
    assert schemes["accessToken"]["scheme"] == "bearer" and "fiAssertion" in schemes
    # the request schemas are the validating ones: unknown fields refused in both
    assert doc["components"]["schemas"]["AuthorizationDetail"]["additionalProperties"] is False
    assert "query_id" in doc["components"]["schemas"]["CdiQueryMessage"]["properties"]


def test_real_answers_hold_to_the_published_schemas(flow):
    doc = document(flow)
    tokens = flow.tokens()
    conforms(doc, "TokenAnswer", tokens)
    conforms(doc, "DataAnswer", flow.data(tokens["access_token"]).get_json())
    conforms(doc, "FormsList", flow.requester.get("/api/v1/forms", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}).get_json())
    conforms(doc, "ConsentView", flow.requester.get(
        f"/api/v1/consents/{tokens['consent_id']}",
        headers={"Authorization": f"Bearer {tokens['access_token']}"}).get_json())
    fi = FIClient(flow)
    accepted = fi.submit(fi.message(tokens["access_token"], ["identity.hkid"], query_id="q-oa"))
    conforms(doc, "QueryAccepted", accepted.get_json())
    conforms(doc, "QueryStatus", fi.poll("q-oa").get_json())
    conforms(doc, "Problem", flow.data("garbage").get_json())
    conforms(doc, "Problem", fi.submit("garbage").get_json())
    conforms(doc, "OAuthError", flow.token("no-such-code").get_json())
    conforms(doc, "ParAnswer", flow.par().get_json())


def test_the_docs_page_serves_swagger_ui_from_the_package_without_a_cdn(flow):
    page = flow.requester.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "https://" not in text and "<script>" not in text          # no CDN, no inline script
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        resp = flow.requester.get(f"/docs/assets/{asset}")
        assert resp.status_code == 200 and kind in resp.mimetype and len(resp.data) > 10_000
    assert flow.requester.get("/docs/assets/..%2Fflask_swagger_ui.py").status_code == 404
    assert flow.requester.get("/static/docs-init.js").status_code == 200
