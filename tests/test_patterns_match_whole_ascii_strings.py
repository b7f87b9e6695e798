"""Every pattern in schemas/ and policies/ matches the whole string in ASCII digits: a trailing
newline (which ``$`` lets through) or another script's digits (which ``\\d`` lets through) is
refused, at PAR before anything is stored, and in what the departments answer."""
from __future__ import annotations

import json

import pytest
import responses

from connectors.base import BadReply, DepartmentsClient
from connectors.eme import EMEConnector
from connectors.immd import ImmigrationConnector
from connectors.utilities import UtilitiesConnector

from .flow import BANK_DETAIL, ledger_snapshot

LENIENT_DURATIONS = {
    "trailing newline": "P90D\n",
    "Arabic-Indic digits": "P\u0669\u0660D",          # P٩٠D
    "full-width digits": "P\uff19\uff10D",            # P９０D
    "Arabic-Indic hours": "PT\u0661\u0662H",          # PT١٢H
}


@pytest.mark.parametrize("case", sorted(LENIENT_DURATIONS))
def test_par_refuses_a_duration_with_a_trailing_newline_or_non_ascii_digits(flow, case):
    before = ledger_snapshot(flow.gw)
    resp = flow.par({**BANK_DETAIL, "duration": LENIENT_DURATIONS[case]})
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "invalid_authorization_details"
    assert ledger_snapshot(flow.gw) == before


IDENTITY = {"name_en": "CHAN, Tai Man", "name_zh": "陳大文", "date_of_birth": "1985-03-14",
            "sex": "M", "as_of": "2026-01-01T00:00:00Z"}
PROFILE = {"mobile": "+852 9123 4567", "email": "chan@example.hk", "as_of": "2026-11-01",
           "address": {"flat": "A", "floor": "12", "block": "3", "building": "Mei Foo",
                       "street": "Broadway", "district": "Sham Shui Po", "region": "KLN"}}
PROOF = {"issuer": "CLP", "account_reference": "****1234", "bill_date": "2026-10-01",
         "verified": True, "as_of": "2026-10-15"}


def _fetch(connector_class, path, record, items):
    client = DepartmentsClient("http://departments.test", timeout=(0.5, 0.5))
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test" + path, body=json.dumps(record),
                  content_type="application/json")
        return connector_class(client).fetch("A1234563", items)


def test_the_well_formed_replies_used_below_are_accepted():
    assert _fetch(ImmigrationConnector, "/immd/v1/identity", IDENTITY, ["identity.name_en"])
    assert _fetch(EMEConnector, "/eme/v1/profile", PROFILE, ["contact.mobile"])
    assert _fetch(UtilitiesConnector, "/utilities/v1/address-proof", PROOF, ["address.proof"])


@pytest.mark.parametrize("connector_class, path, record, items", [
    (ImmigrationConnector, "/immd/v1/identity", {**IDENTITY, "date_of_birth": "1985-03-14\n"},
     ["identity.date_of_birth"]),
    (ImmigrationConnector, "/immd/v1/identity",
     {**IDENTITY, "date_of_birth": "\u0661\u0669\u0668\u0665-03-14"}, ["identity.date_of_birth"]),
    (ImmigrationConnector, "/immd/v1/identity", {**IDENTITY, "name_en": "CHAN, Tai Man\n"},
     ["identity.name_en"]),
    (EMEConnector, "/eme/v1/profile", {**PROFILE, "mobile": "+852 9123 4567\n"},
     ["contact.mobile"]),
    (UtilitiesConnector, "/utilities/v1/address-proof", {**PROOF, "bill_date": "2026-10-01\n"},
     ["address.proof"]),
    (UtilitiesConnector, "/utilities/v1/address-proof",
     {**PROOF, "bill_date": "\uff12\uff10\uff12\uff16-10-01"}, ["address.proof"]),
    (UtilitiesConnector, "/utilities/v1/address-proof",
     {**PROOF, "account_reference": "****1234\n"}, ["address.proof"]),
], ids=["dob trailing newline", "dob Arabic-Indic digits", "name trailing newline",
        "mobile trailing newline", "bill date trailing newline", "bill date full-width digits",
        "account reference trailing newline"])
def test_department_reply_with_a_trailing_newline_or_non_ascii_digits_is_a_bad_reply(
        connector_class, path, record, items):
    with pytest.raises(BadReply):
        _fetch(connector_class, path, record, items)
