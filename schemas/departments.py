"""Replies of the department services, validated before anything is passed on."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

DISTRICTS = (
    "Central and Western", "Wan Chai", "Eastern", "Southern",
    "Yau Tsim Mong", "Sham Shui Po", "Kowloon City", "Wong Tai Sin", "Kwun Tong",
    "Kwai Tsing", "Tsuen Wan", "Tuen Mun", "Yuen Long", "North", "Tai Po", "Sha Tin",
    "Sai Kung", "Islands",
)
REGIONS = ("HK", "KLN", "NT")
REGION_OF = {**dict.fromkeys(("Central and Western", "Wan Chai", "Eastern", "Southern"), "HK"),
             **dict.fromkeys(("Yau Tsim Mong", "Sham Shui Po", "Kowloon City", "Wong Tai Sin",
                              "Kwun Tong"), "KLN")}   # the other nine districts: NT
ISSUERS = ("WSD", "CLP", "HK Electric", "Towngas")      # the utilities whose bills prove addresses
# marshmallow's Regexp uses re.match: each pattern ends in \Z (``$`` would let a trailing newline
# through) and names ASCII digits as [0-9] (``\d`` would take any script's digits).
NO_CONTROL = validate.Regexp(r"[^\r\n<>\x00-\x1f]*\Z", error="control characters or markup")
# the two at once, as one pattern (a reply's text fields: one check each, not two)
PLAIN_TEXT = validate.Regexp(r"[^\r\n<>\x00-\x1f]{0,200}\Z",
                             error="control characters, markup, or longer than 200")
ISO_DATE = validate.Regexp(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z", error="not a date (YYYY-MM-DD)")


class _Reply(Schema):
    class Meta:
        unknown = EXCLUDE

    as_of = fields.String(required=True, validate=validate.Length(1, 40))


class IdentityReply(_Reply):
    name_en = fields.String(required=True, validate=PLAIN_TEXT)
    name_zh = fields.String(required=True, validate=PLAIN_TEXT)
    date_of_birth = fields.String(required=True, validate=ISO_DATE)
    sex = fields.String(required=True, validate=validate.OneOf(["M", "F", "X"]))


class AddressSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    flat = fields.String(allow_none=True, validate=PLAIN_TEXT)
    floor = fields.String(allow_none=True, validate=PLAIN_TEXT)
    block = fields.String(allow_none=True, validate=PLAIN_TEXT)
    building = fields.String(allow_none=True, validate=PLAIN_TEXT)
    street = fields.String(allow_none=True, validate=PLAIN_TEXT)
    district = fields.String(required=True, validate=validate.OneOf(DISTRICTS))
    region = fields.String(required=True, validate=validate.OneOf(REGIONS))


class ProfileReply(_Reply):
    mobile = fields.String(allow_none=True, validate=[validate.Length(max=30), NO_CONTROL])
    email = fields.String(allow_none=True, validate=[validate.Length(max=254), NO_CONTROL])
    address = fields.Nested(AddressSchema, allow_none=True)
    address_verified_by = fields.String(allow_none=True, validate=validate.Length(max=40))


class AddressProofReply(_Reply):
    issuer = fields.String(required=True, validate=validate.OneOf(ISSUERS))
    account_reference = fields.String(required=True, validate=validate.Regexp(r"\*+[0-9A-Za-z]{1,6}\Z"))
    bill_date = fields.String(required=True, validate=ISO_DATE)
    verified = fields.Boolean(required=True)


class BillReply(_Reply):
    """A utility's bill, as the citizen named it for an address proof."""
    issuer = fields.String(required=True, validate=validate.OneOf(ISSUERS))
    account_reference = fields.String(required=True, validate=validate.Regexp(r"\*+[0-9A-Za-z]{1,6}\Z"))
    bill_date = fields.String(required=True, validate=ISO_DATE)
    address = fields.Nested(AddressSchema, required=True)
