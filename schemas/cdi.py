"""The CDI bridge's message: the payload of the compact JWS an FI signs to submit a query
(SPEC 5). Strict: a field the bridge does not know is refused, not ignored (this is the
gateway's own message format, not an OAuth request)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate

QUERY_ID = r"[A-Za-z0-9._:-]{1,100}\Z"
MAX_ITEMS = 30


class WholeNumber(fields.Integer):
    """An integer in the JSON itself: not a string, a float, a boolean or 1e400."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a whole number")
        return super()._deserialize(value, attr, data, **kwargs)


def _not_an_hkid(value: str) -> None:
    """A query id goes into URLs, logs and keys: never a personal identifier."""
    from schemas.hkid import InvalidHKID, normalise
    try:
        normalise(value)
    except InvalidHKID:
        return
    raise ValidationError("must not be an HKID")


class QueryMessage(Schema):
    class Meta:
        unknown = RAISE

    query_id = fields.String(required=True, validate=[validate.Regexp(QUERY_ID, error=(
        "1 to 100 letters, digits, '.', '_', ':' or '-'")), _not_an_hkid])
    iat = WholeNumber(required=True)
    jti = fields.String(required=True, validate=validate.Length(min=1, max=200))
    access_token = fields.String(required=True, validate=validate.Length(min=1, max=8192))
    items = fields.List(fields.String(validate=validate.Length(min=1, max=100)), required=True,
                        validate=validate.Length(min=1, max=MAX_ITEMS))
    callback_url = fields.String(validate=validate.Length(min=1, max=2000))
    # registered JWT claims an FI's JOSE library may add; checked when present
    iss = fields.String(validate=validate.Length(min=1, max=64))
    sub = fields.String(validate=validate.Length(min=1, max=64))
    aud = fields.Raw()
    exp = WholeNumber()
    nbf = WholeNumber()
