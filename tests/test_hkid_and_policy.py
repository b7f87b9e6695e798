"""HKID check characters and policy files, as the people who write them would get them wrong."""
from __future__ import annotations

import pytest
import yaml

from policies.engine import PolicyError, load_file, validate
from schemas.duration import InvalidDuration, seconds
from schemas.hkid import InvalidHKID, normalise


@pytest.mark.parametrize("raw, canonical", [("A123456(3)", "A1234563"), ("G123456(A)", "G123456A"),
                                            ("AB987654(3)", "AB9876543"), ("a1234563", "A1234563")])
def test_valid_hkids_are_accepted(raw, canonical):
    assert normalise(raw) == canonical


@pytest.mark.parametrize("raw", ["A123456(4)", "A12345(3)", "A1234567(3)", "Ａ123456(3)",
                                 "ABC123456(3)", "A123456(3", "", "A123456(3)\n<script>", None,
                                 "x" * 10_000])
def test_invalid_hkids_are_refused(raw):
    with pytest.raises(InvalidHKID):
        normalise(raw)


@pytest.mark.parametrize("raw", ["A123456(3)\n", "A1234563\n", "A123456(3)\r\n", "\nA123456(3)",
                                 "A123456(3)\t", "A\u0661\u0662\u0663\u0664\u0665\u0666(3)",
                                 "A\uff11\uff12\uff13\uff14\uff15\uff16(3)",
                                 "A123456(\u0663)"],
                         ids=["trailing newline", "bare trailing newline", "trailing CRLF",
                              "leading newline", "trailing tab", "Arabic-Indic digits",
                              "full-width digits", "Arabic-Indic check digit"])
def test_hkid_with_a_newline_or_non_ascii_digits_is_refused(raw):
    with pytest.raises(InvalidHKID):
        normalise(raw)


@pytest.mark.parametrize("text, expected", [("P90D", 90 * 86400), ("P1Y", 365 * 86400),
                                            ("PT12H", 12 * 3600), ("P2W", 14 * 86400)])
def test_durations(text, expected):
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["90D", "P", "PT", "P0D", "P-1D", "P1.5D", 90, "P99999999Y"])
def test_bad_durations(text):
    with pytest.raises(InvalidDuration):
        seconds(text)


@pytest.mark.parametrize("text", ["P90D\n", "PT12H\n", "P\n", "P\u0669\u0660D", "P\uff19\uff10D",
                                  "PT\u0661H", "P1Y\u0662M"],
                         ids=["trailing newline", "time part then newline", "bare P newline",
                              "Arabic-Indic digits", "full-width digits",
                              "Arabic-Indic hours", "Arabic-Indic months"])
def test_durations_with_a_trailing_newline_or_non_ascii_digits_are_refused(text):
    with pytest.raises(InvalidDuration):
        seconds(text)


def _policy(**purpose_changes) -> dict:
    purpose = {"description": {"en": "Open", "zh-HK": "開"}, "legal_basis": "consent",
               "items": {"required": ["identity.name_en"], "optional": []},
               "access": ["once"], "max_duration": "P1Y", "retention": "P7Y"}
    purpose.update(purpose_changes)
    return {"requester": "bank-of-example", "purposes": {"ekyc": purpose}}


def test_shipped_policies_are_valid():
    from policies.engine import POLICY_DIR
    files = sorted(POLICY_DIR.glob("*.yaml"))
    assert files
    for path in files:
        assert load_file(path)["requester"] == path.stem


@pytest.mark.parametrize("changes, where", [
    ({"items": {"required": ["identity.shoe_size"]}}, "purposes.ekyc.items.required[0]"),
    ({"access": ["forever"]}, "purposes.ekyc.access"),
    ({"max_duration": "one year"}, "purposes.ekyc.max_duration"),
    ({"legal_basis": "because"}, "purposes.ekyc.legal_basis"),
    ({"description": {"en": "only english"}}, "purposes.ekyc.description"),
    ({"colour": "blue"}, "purposes.ekyc.colour"),
])
def test_policy_errors_name_the_file_and_the_key(tmp_path, changes, where):
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump(_policy(**changes)))
    with pytest.raises(PolicyError) as err:
        load_file(path)
    assert str(path) in str(err.value) and where in str(err.value)


@pytest.mark.parametrize("changes, where", [
    ({"max_duration": "P1Y\n"}, "purposes.ekyc.max_duration"),
    ({"retention": "P\u0667Y"}, "purposes.ekyc.retention"),
])
def test_policy_duration_with_a_newline_or_non_ascii_digits_is_refused_naming_the_key(changes,
                                                                                      where):
    with pytest.raises(PolicyError, match=where):
        validate(_policy(**changes), source="p.yaml")


def test_policy_purpose_id_with_non_ascii_digits_is_refused_naming_it():
    doc = _policy()
    doc["purposes"] = {"ekyc-\u0663": doc["purposes"]["ekyc"]}
    with pytest.raises(PolicyError, match="purposes.ekyc-"):
        validate(doc, source="p.yaml")


def test_policy_missing_a_key_names_it():
    doc = _policy()
    del doc["purposes"]["ekyc"]["retention"]
    with pytest.raises(PolicyError, match="purposes.ekyc.retention"):
        validate(doc, source="p.yaml")


def test_unreadable_policy_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("purposes: [unclosed")
    with pytest.raises(PolicyError, match="broken.yaml"):
        load_file(path)
