"""``QuickCheck`` (schemas/quick_check.py) answers exactly what marshmallow answers for the
department replies: the same dict for a reply marshmallow accepts, marshmallow's own error for
one it refuses — compared on generated replies, near-valid and broken."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from schemas.departments import (DISTRICTS, ISSUERS, REGIONS, AddressProofReply, BillReply,
                                 IdentityReply, ProfileReply)
from schemas.quick_check import QuickCheck

REPLIES = [IdentityReply(), ProfileReply(), AddressProofReply(), BillReply()]

# strings that pass, strings each validator refuses, and what a broken department might send
TEXT = st.one_of(
    st.sampled_from(["Chan Tai Man", "陳大文", "2026-01-31", "2026-1-31", "M", "F", "X", "m",
                     "*1234", "**ab12", "*", "1234", "a@b.hk", "9123 4567", "", " ",
                     "line\nbreak", "trailing\n", "<b>", "tab\there", "x" * 200, "x" * 201,
                     "x" * 254, "x" * 255, "x" * 40, "x" * 41, "２０２６-01-31", "２０２６"]),
    st.sampled_from(DISTRICTS + REGIONS + ISSUERS),
    st.text(max_size=60),
)
ANY_VALUE = st.one_of(TEXT, st.none(), st.booleans(), st.integers(-2, 2), st.floats(0, 1),
                      st.binary(max_size=6), st.lists(st.integers(), max_size=2),
                      st.sampled_from(["true", "false", "1", "0", 1, 0, "yes", "no"]))


def _address(draw) -> object:
    return draw(st.one_of(
        st.none(), ANY_VALUE,
        st.fixed_dictionaries({}, optional={k: ANY_VALUE for k in
                                            ("flat", "floor", "block", "building", "street",
                                             "district", "region", "unknown")}),
        st.fixed_dictionaries({"district": st.sampled_from(DISTRICTS),
                               "region": st.sampled_from(REGIONS)},
                              optional={k: st.one_of(TEXT, st.none())
                                        for k in ("flat", "floor", "street")})))


@st.composite
def replies(draw, schema: Schema):
    """A reply for ``schema``: each declared field present or not, valid-looking or not, and
    sometimes keys the schema does not know."""
    data = {}
    for name, field in schema.load_fields.items():
        if draw(st.integers(0, 9)) == 0:
            continue                                  # missing
        if isinstance(field, fields.Nested):
            data[name] = _address(draw)
        elif isinstance(field, fields.Boolean):
            data[name] = draw(st.one_of(st.booleans(), ANY_VALUE))
        else:
            data[name] = draw(st.one_of(TEXT, TEXT, ANY_VALUE))
    if draw(st.booleans()):
        data[draw(st.sampled_from(["extra", "note", "as_of_2"]))] = draw(ANY_VALUE)
    return data


ADDRESS = {"flat": "A", "floor": "12", "block": None, "building": "Tower 1",
           "street": "1 Main Road", "district": "Sha Tin", "region": "NT"}
VALID = {
    IdentityReply: {"as_of": "2026-12-01", "name_en": "CHAN, Tai Man", "name_zh": "陳大文",
                    "date_of_birth": "1980-02-29", "sex": "F"},
    ProfileReply: {"as_of": "2026-12-01", "mobile": "9123 4567", "email": "tm@example.hk",
                   "address": ADDRESS, "address_verified_by": "CLP"},
    AddressProofReply: {"as_of": "2026-12-01", "issuer": "CLP", "account_reference": "****1234",
                        "bill_date": "2026-11-01", "verified": True},
    BillReply: {"as_of": "2026-12-01", "issuer": "WSD", "account_reference": "**ab12",
                "bill_date": "2026-10-15", "address": ADDRESS},
}


@st.composite
def one_off(draw, schema: Schema):
    """A valid reply with one thing changed: a field (or a field of its address) gone, null,
    or any other value — where a check left out would show."""
    data = {**VALID[type(schema)], "address": dict(ADDRESS)} \
        if "address" in VALID[type(schema)] else dict(VALID[type(schema)])
    target = data
    if "address" in data and draw(st.booleans()):
        target = data["address"]
    key = draw(st.sampled_from(sorted(target)))
    how = draw(st.sampled_from(["gone", "null", "other"]))
    if how == "gone":
        del target[key]
    else:
        target[key] = None if how == "null" else draw(ANY_VALUE)
    return data


def _marshmallow(schema: Schema, data):
    try:
        return "loaded", schema.load(data)
    except ValidationError as exc:
        return "refused", exc.messages


def _quick(check: QuickCheck, data):
    try:
        return "loaded", check.load(data)
    except ValidationError as exc:
        return "refused", exc.messages


@pytest.mark.parametrize("schema", REPLIES, ids=lambda s: type(s).__name__)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_quick_check_answers_exactly_what_marshmallow_answers(schema, data):
    reply = data.draw(st.one_of(replies(schema), one_off(schema)))
    expected = _marshmallow(schema, reply)
    got = _quick(QuickCheck(schema), reply)
    assert got == expected, f"reply {reply!r}: marshmallow {expected!r}, quick check {got!r}"
    if got[0] == "loaded":
        assert list(got[1]) == list(expected[1])     # the same keys in the same order


def test_a_plainly_valid_reply_is_not_loaded_by_marshmallow(monkeypatch):
    """The point of it: a good reply is answered without marshmallow's load."""
    check = QuickCheck(ProfileReply())
    monkeypatch.setattr(check.schema, "load", lambda data: pytest.fail("marshmallow was asked"))
    reply = {"as_of": "2026-12-01", "mobile": "9123 4567", "email": None, "extra": 1,
             "address": {"flat": "A", "floor": None, "district": "Sha Tin", "region": "NT"}}
    assert check.load(reply) == {"as_of": "2026-12-01", "mobile": "9123 4567", "email": None,
                                 "address": {"flat": "A", "floor": None, "district": "Sha Tin",
                                             "region": "NT"}}


def test_a_refused_reply_names_its_fields_in_marshmallows_words():
    check = QuickCheck(IdentityReply())
    with pytest.raises(ValidationError) as refused:
        check.load({"as_of": "x", "name_en": "a\nb", "name_zh": "陳", "date_of_birth": "1990",
                    "sex": "M"})
    assert refused.value.messages == {
        "name_en": ["control characters, markup, or longer than 200"],
        "date_of_birth": ["not a date (YYYY-MM-DD)"]}


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE             # as the replies: only a field's own checks refuse


class _Renamed(_Lenient):
    name = fields.String(data_key="full_name")


class _Counted(_Lenient):
    count = fields.Integer()


class _Ranged(_Lenient):
    name = fields.String(validate=validate.Predicate("isupper"))


class _Hooked(_Lenient):
    name = fields.String()

    @post_load
    def upper(self, data, **kwargs):
        return {k: v.upper() for k, v in data.items()}


class _Strict(Schema):
    name = fields.String()          # unknown keys raise (marshmallow's default)


class _YesNo(_Lenient):
    agreed = fields.Boolean(truthy={"yes"})                  # True refused


class _NoOnly(_Lenient):
    agreed = fields.Boolean(falsy={"no"})                    # False refused


class _Inner(_Lenient):
    name = fields.String()


class _StrictInside(_Lenient):
    inner = fields.Nested(_Inner, unknown=RAISE)           # unknown keys inside refused


@pytest.mark.parametrize("schema", [_Renamed(), _Counted(), _Ranged(), _Hooked(), _Strict(),
                                    _YesNo(), _NoOnly(), _StrictInside()],
                         ids=lambda s: type(s).__name__)
def test_a_schema_it_cannot_check_as_marshmallow_would_is_refused_at_compile_time(schema):
    with pytest.raises(TypeError, match="cannot compile"):
        QuickCheck(schema)
