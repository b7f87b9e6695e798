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


@pytest.mark.parametrize("text, expected", [("P90D", 90 * 86400), ("P1Y", 365 * 86400),
                                            ("PT12H", 12 * 3600), ("P2W", 14 * 86400)])
def test_durations(text, expected):
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["90D", "P", "PT", "P0D", "P-1D", "P1.5D", 90, "P99999999Y"])
def test_bad_durations(text):
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
