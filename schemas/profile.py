"""The citizen's own e-ME items as they edit them on /me/profile: a mobile number, an email
address and a residential address structured as Hong Kong writes it. Chinese characters are
welcome in every text field; markup and control characters are not."""
from __future__ import annotations

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate

from schemas.departments import DISTRICTS, NO_CONTROL, REGION_OF, REGIONS

# 8 digits starting 4-9 (Hong Kong mobiles), with or without +852, spaces or dashes between
MOBILE = re.compile(r"(?:\+852)?([4-9][0-9]{7})\Z")
ADDRESS_TEXT = ("flat", "floor", "block", "building", "street")


def mobile_digits(raw: str) -> str:
    match = MOBILE.match(re.sub(r"[ -]", "", raw))
    if not match:
        raise ValidationError("8 digits starting with 4 to 9, with or without +852")
    return match.group(1)


class ProfileEdit(Schema):
    """The /me/profile form; empty fields are None. Loads to the e-ME profile's shape."""
    class Meta:
        unknown = EXCLUDE

    mobile = fields.String(allow_none=True, validate=validate.Length(max=30))
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    flat = fields.String(allow_none=True, validate=[validate.Length(max=40), NO_CONTROL])
    floor = fields.String(allow_none=True, validate=[validate.Length(max=40), NO_CONTROL])
    block = fields.String(allow_none=True, validate=[validate.Length(max=100), NO_CONTROL])
    building = fields.String(allow_none=True, validate=[validate.Length(max=200), NO_CONTROL])
    street = fields.String(allow_none=True, validate=[validate.Length(max=200), NO_CONTROL])
    district = fields.String(allow_none=True, validate=validate.OneOf(DISTRICTS))
    region = fields.String(allow_none=True, validate=validate.OneOf(REGIONS))

    @pre_load
    def _blank_is_none(self, data, **kwargs):
        return {k: (v.strip() or None) if isinstance(v, str) else v for k, v in data.items()}

    @post_load
    def _as_profile(self, data, **kwargs):
        errors = {}
        mobile = data.get("mobile")
        if mobile is not None:
            try:
                digits = mobile_digits(mobile)
                mobile = f"+852 {digits[:4]} {digits[4:]}"
            except ValidationError as exc:
                errors["mobile"] = exc.messages
        address = {k: data.get(k) for k in (*ADDRESS_TEXT, "district", "region")}
        if any(address.values()):
            for key in ("district", "region"):
                if not address[key]:
                    errors[key] = ["required for an address"]
            if not (address["building"] or address["street"]):
                errors["building"] = ["a building or a street is required for an address"]
            if address["district"] and address["region"] and \
                    REGION_OF.get(address["district"], "NT") != address["region"]:
                errors["region"] = [f"{address['district']} is not in that region"]
        if errors:
            raise ValidationError(errors)
        return {"mobile": mobile, "email": data.get("email"),
                "address": address if any(address.values()) else None}
