"""The shapes of what the gateway answers on /oauth, /api and /cdi (SPEC 3-5, 8), as
marshmallow schemas: ``/openapi.json`` is generated from these and from the request schemas
(``authorization.py``, ``cdi.py``), one source for both."""
from __future__ import annotations

from marshmallow import Schema, fields

from .authorization import AuthorizationDetailSchema


class Problem(Schema):
    """RFC 9457 problem details (application/problem+json)."""
    type = fields.String(required=True, metadata={"description": "<issuer>/problems/<name>"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "the fields that were wrong, and why"})


class OAuthError(Schema):
    """RFC 6749 section 5.2."""
    error = fields.String(required=True)
    error_description = fields.String()


class ParForm(Schema):
    """RFC 9126 pushed authorization request (application/x-www-form-urlencoded); parameters
    the gateway does not know are ignored (RFC 6749 3.1)."""
    response_type = fields.String(required=True, metadata={"enum": ["code"]})
    client_id = fields.String(required=True)
    redirect_uri = fields.String(required=True)
    state = fields.String()
    code_challenge = fields.String(required=True)
    code_challenge_method = fields.String(required=True, metadata={"enum": ["S256"]})
    authorization_details = fields.String(required=True, metadata={
        "description": "a JSON list of one AuthorizationDetail"})
    client_assertion_type = fields.String(required=True, metadata={
        "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]})
    client_assertion = fields.String(required=True, metadata={"description": "RFC 7523 JWT"})


class ParAnswer(Schema):
    request_uri = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class TokenForm(Schema):
    grant_type = fields.String(required=True, metadata={
        "enum": ["authorization_code", "refresh_token"]})
    code = fields.String()
    redirect_uri = fields.String()
    code_verifier = fields.String()
    refresh_token = fields.String()
    client_assertion_type = fields.String(required=True)
    client_assertion = fields.String(required=True)


class TokenAnswer(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"enum": ["Bearer"]})
    expires_in = fields.Integer(required=True)
    consent_id = fields.String(required=True)
    authorization_details = fields.List(fields.Nested(AuthorizationDetailSchema), required=True)
    refresh_token = fields.String()


class TokenForm7009(Schema):
    token = fields.String(required=True)
    token_type_hint = fields.String()
    client_assertion_type = fields.String(required=True)
    client_assertion = fields.String(required=True)


class Introspection(Schema):
    active = fields.Boolean(required=True)


class ItemValue(Schema):
    value = fields.Raw(required=True, metadata={"description": "a string, or an object (an "
                                                               "address, an address proof)"})
    source = fields.String(required=True)
    verified = fields.Boolean(required=True)
    as_of = fields.String(required=True)


class DataAnswer(Schema):
    consent_id = fields.String(required=True)
    subject = fields.String(required=True, metadata={"description": "pairwise subject"})
    items = fields.Dict(keys=fields.String(), values=fields.Nested(ItemValue), required=True)


class FormField(Schema):
    name = fields.String(required=True)
    label = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    item = fields.String(required=True)
    transform = fields.String(allow_none=True, metadata={
        "description": "how the item's value is shaped for the field"})
    required = fields.Boolean()


class FormDefinition(Schema):
    form_id = fields.String(required=True)
    title = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    fields_ = fields.List(fields.Nested(FormField), required=True, data_key="fields")


class FormsList(Schema):
    forms = fields.List(fields.Nested(FormDefinition), required=True)


class FilledField(Schema):
    name = fields.String(required=True)
    label = fields.Raw(required=True)
    value = fields.Raw(required=True)
    item = fields.String(required=True)
    source = fields.String(required=True)
    verified = fields.Boolean(required=True)


class Prefilled(Schema):
    form_id = fields.String(required=True)
    fields_ = fields.List(fields.Nested(FilledField), required=True, data_key="fields")
    missing = fields.List(fields.String(), required=True)


class ConsentView(Schema):
    consent_id = fields.String(required=True)
    status = fields.String(required=True, metadata={
        "enum": ["requested", "approved", "declined", "revoked", "expired"]})
    purpose = fields.String(required=True)
    data_items = fields.List(fields.String(), required=True)
    expires_at = fields.String(allow_none=True, required=True)
    receipt = fields.String(required=True, metadata={
        "description": "ISO/IEC TS 27560-shaped record, a compact JWS (cdeg-consent-receipt+jwt)"})


class QueryAccepted(Schema):
    query_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["queued", "running", "done",
                                                              "failed"]})


class QueryError(Schema):
    code = fields.String(required=True)
    detail = fields.String(required=True)


class CallbackState(Schema):
    url = fields.String(required=True)
    delivery = fields.String(required=True, metadata={
        "enum": ["waiting", "pending", "delivered", "failed"]})
    attempts = fields.Integer(required=True)
    last_error = fields.String()


class QueryStatus(QueryAccepted):
    result = fields.String(metadata={"description": "compact JWE (ECDH-ES+A256KW, A256GCM, "
                                                    "cty JWT) of the gateway's signed result"})
    error = fields.Nested(QueryError)
    callback = fields.Nested(CallbackState)
