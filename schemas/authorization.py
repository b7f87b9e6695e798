"""The payloads of the consent grant: the PAR form and its ``authorization_details`` (RFC 9396)."""
from __future__ import annotations

import json

from marshmallow import (EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates,
                         validates_schema)

from .duration import InvalidDuration, seconds

MAX_DETAILS_BYTES = 8 * 1024
ITEM_ID = validate.Regexp(r"[a-z][a-z_]*\.[a-z][a-z_]*\Z", error="not a data item id")


class AuthorizationDetailSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Equal("cdeg_data"))
    purpose = fields.String(required=True, validate=[validate.Length(1, 64),
                            validate.Regexp(r"[a-z0-9][a-z0-9-]*\Z", error="not a purpose id")])
    data_items = fields.List(fields.String(validate=[validate.Length(1, 64), ITEM_ID]),
                             required=True, validate=validate.Length(1, 30))
    access = fields.String(required=True, validate=validate.OneOf(["once", "ongoing"]))
    duration = fields.String(validate=validate.Length(1, 32))

    @validates("duration")
    def _duration_is_iso(self, value, **_):
        try:
            seconds(value)
        except InvalidDuration as exc:
            raise ValidationError(str(exc)) from exc

    @validates("data_items")
    def _no_repeats(self, value, **_):
        if len(set(value)) != len(value):
            raise ValidationError("a data item is listed twice")

    @validates_schema
    def _ongoing_needs_duration(self, data, **_):
        if data.get("access") == "ongoing" and "duration" not in data:
            raise ValidationError("an ongoing consent needs a duration", "duration")


def parse_authorization_details(raw) -> list[dict]:
    """Parse and validate the form value; raise ValidationError with field messages."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError({"authorization_details": ["required"]})
    if len(raw.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise ValidationError({"authorization_details": ["too large"]})
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationError({"authorization_details": ["not valid JSON"]}) from exc
    if not isinstance(value, list) or not value:
        raise ValidationError({"authorization_details": ["must be a non-empty JSON list"]})
    if len(value) != 1:
        raise ValidationError({"authorization_details": [
            "one cdeg_data entry per request: ask for each purpose separately"]})
    if not isinstance(value[0], dict):
        raise ValidationError({"authorization_details": ["each entry must be an object"]})
    return [AuthorizationDetailSchema().load(value[0])]


class PushedRequestSchema(Schema):
    """The form of POST /oauth/par, client authentication fields excluded.

    RFC 6749 section 3.1: parameters the server does not recognise MUST be ignored (a client
    library may add ``resource``, ``nonce``, ``scope``...), so they are dropped here; every
    parameter the gateway uses is checked strictly. (The fields inside
    ``authorization_details`` are the gateway's own JSON: there an unknown field is refused.)
    """

    class Meta:
        unknown = EXCLUDE

    response_type = fields.String(required=True)
    client_id = fields.String(required=True, validate=validate.Length(1, 64))
    redirect_uri = fields.String(required=True, validate=validate.Length(1, 500))
    state = fields.String(validate=validate.Length(1, 500))
    code_challenge = fields.String(required=True, validate=validate.Regexp(
        r"[A-Za-z0-9_-]{43}\Z", error="must be a base64url SHA-256 (43 characters)"))
    code_challenge_method = fields.String(required=True)
    authorization_details = fields.String(required=True)
    # the authorization response goes back in the query: the only mode there is
    response_mode = fields.String(validate=validate.Equal("query"))
