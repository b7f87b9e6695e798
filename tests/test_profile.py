"""/me/profile: the citizen keeps their own items in e-ME once — mobile, email, the residential
address as Hong Kong writes it — and the next pre-filled form shows them. Edits persist in the
e-ME mock's own store across restarts; bad input is refused field by field and nothing is
half-saved."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest

from .conftest import build_app, make_config
from .flow import HKID, TD, Flow
from .test_forms import TD_DETAIL, _prefill

NEW_ADDRESS = {"flat": "3B", "floor": "7", "block": "", "building": "麗港城",
               "street": "8 Laguna Street", "district": "Kwun Tong", "region": "KLN"}


def _form(flow, **changes) -> dict:
    page = flow.browser.get("/me/profile").get_data(as_text=True)
    return {"csrf_token": flow.csrf(page), "mobile": "+852 9123 4567",
            "email": "chan.taiman@example.hk", **NEW_ADDRESS, **changes}


def _save(flow, **changes):
    return flow.browser.post("/me/profile", data=_form(flow, **changes))


def _values(page: str) -> dict:
    return dict(re.findall(r'name="([a-z]+)" type="[a-z]+" value="([^"]*)"', page))


@pytest.fixture
def citizen(embedded_app):
    flow = Flow(embedded_app)
    flow.login(HKID, next_url="/me/profile")
    return flow


def test_the_profile_shows_the_citizens_e_me_items_under_their_catalogue_labels(citizen):
    page = citizen.browser.get("/me/profile")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    text = page.get_data(as_text=True)
    for label in ("Mobile number", "Email address", "Residential address", "District", "Save"):
        assert label in text
    assert _values(text)["mobile"] == "+852 9123 4567"
    assert _values(text)["building"] == "Mei Foo Sun Chuen"
    assert 'data-verified="true"' in text and "CLP" in text     # backed by a bill
    district = text[text.index('id="f-district"'):text.index('id="f-region"')]
    assert len(re.findall(r'<option value="[A-Z]', district)) == 18    # Hong Kong's districts
    assert "CLP — ****5821" in text                                   # the proof on record


def test_an_edit_is_saved_and_the_next_prefill_shows_it(embedded_app, citizen):
    resp = _save(citizen, mobile="6123-4567")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/me/profile")
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert "Saved" in page and _values(page)["mobile"] == "+852 6123 4567"
    assert _values(page)["building"] == "麗港城"
    assert 'data-verified="false"' in page        # a new address: the old bill no longer backs it
    td = Flow(embedded_app, TD)
    tokens = td.tokens(TD_DETAIL)
    fields = {f["name"]: f for f in _prefill(td, tokens["access_token"]).get_json()["fields"]}
    assert fields["daytime_phone"]["value"] == "61234567"
    assert fields["address_line_1"]["value"] == "Flat 3B, 7/F"
    assert fields["address_line_2"]["value"] == "麗港城, 8 Laguna Street"
    assert fields["address_line_1"]["verified"] is False


def test_edits_outlive_a_restart(tmp_path, request, clock):
    config = make_config(tmp_path, "embedded", request)
    app = build_app(config, clock)
    flow = Flow(app)
    flow.login(HKID, next_url="/me/profile")
    assert _save(flow, email="tai.man@example.hk").status_code == 303
    app.extensions["cdeg"].close()
    again = Flow(build_app(config, clock))        # the same instance folder
    again.login(HKID, next_url="/me/profile")
    assert _values(again.browser.get("/me/profile").get_data(as_text=True))["email"] == \
        "tai.man@example.hk"
    again.gw.close()


@pytest.mark.parametrize("changes, field", [
    ({"mobile": "9123456"}, "mobile"),                 # 7 digits
    ({"mobile": "+852 1234 5678"}, "mobile"),          # not a mobile's first digit
    ({"mobile": "+86 139 1234 5678"}, "mobile"),
    ({"email": "not-an-address"}, "email"),
    ({"district": "Atlantis"}, "district"),
    ({"region": "MACAU"}, "region"),
    ({"district": ""}, "district"),                    # an address needs its district
    ({"building": "", "street": ""}, "building"),
    ({"street": "1 Broadway\r\nSet-Cookie: x"}, "street"),
    ({"building": "<script>alert(1)</script>"}, "building"),
    ({"building": "大" * 1001}, "building"),
])
def test_bad_input_is_refused_by_field_and_nothing_is_saved(citizen, changes, field):
    before = citizen.browser.get("/me/profile").get_data(as_text=True)
    resp = _save(citizen, **changes)
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert f'id="e-{field}"' in page and "Nothing was saved" in page
    assert "<script>alert" not in page
    after = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert _values(after) == _values(before)


def test_chinese_is_welcome_in_every_text_field(citizen):
    chinese = {"flat": "甲室", "floor": "十二", "block": "第三座", "building": "美孚新邨",
               "street": "百老匯街一號"}
    assert _save(citizen, **chinese).status_code == 303
    shown = _values(citizen.browser.get("/me/profile").get_data(as_text=True))
    assert {k: shown[k] for k in chinese} == chinese


def test_the_page_speaks_traditional_chinese(citizen):
    page = citizen.browser.get("/me/profile?lang=zh-HK").get_data(as_text=True)
    assert "手提電話號碼" in page and "深水埗" in page and "儲存" in page and "Save" in page


def test_a_save_without_its_csrf_token_or_session_changes_nothing(embedded_app, citizen):
    form = _form(citizen, mobile="6999 0000")
    form.pop("csrf_token")
    assert citizen.browser.post("/me/profile", data=form).status_code == 400
    stranger = Flow(embedded_app).browser
    assert stranger.post("/me/profile", data=_form(citizen, mobile="6999 0000")).status_code \
        in (303, 400)
    assert _values(citizen.browser.get("/me/profile").get_data(as_text=True))["mobile"] == \
        "+852 9123 4567"


def test_the_profile_needs_a_login(embedded_app):
    resp = Flow(embedded_app).browser.get("/me/profile")
    assert resp.status_code == 303 and "/login" in resp.headers["Location"]


# -- address proofs ----------------------------------------------------------------------------

def _prove(flow, **form):
    page = flow.browser.get("/me/profile").get_data(as_text=True)
    return flow.browser.post("/me/profile/proof", data={"csrf_token": flow.csrf(page), **form})


def _clp_bill_date(embedded_app) -> str:
    """The mock CLP bill's date: 50 days before today (connectors/mock/records.yaml)."""
    return (_hong_kong_today() - timedelta(days=50)).isoformat()


def _hong_kong_today() -> date:
    from gateway.address_proofs import HONG_KONG
    return datetime.now(HONG_KONG).date()


def test_a_recent_bill_to_the_profile_address_verifies_it(embedded_app, citizen):
    mei_foo = {"flat": "12A", "floor": "12", "block": "Block 3", "building": "Mei Foo Sun Chuen",
               "street": "1 Broadway", "district": "Sham Shui Po", "region": "KLN"}
    assert _save(citizen).status_code == 303                # moved away: the proof no longer holds
    assert _save(citizen, **mei_foo).status_code == 303     # and back, unproven
    assert 'class="proof" data-verified="false"' in citizen.browser.get(
        "/me/profile").get_data(as_text=True)
    resp = _prove(citizen, issuer="CLP", account_reference="3000-1234-5821",
                  bill_date=_clp_bill_date(embedded_app))
    assert resp.status_code == 303
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert "The bill proves your address" in page and 'data-verified="true"' in page
    td = Flow(embedded_app, TD)
    tokens = td.tokens({**TD_DETAIL, "data_items": ["identity.name_en", "identity.hkid",
                                                     "address.residential"]})
    data = td.data(tokens["access_token"]).get_json()["items"]
    assert data["address.residential"]["verified"] is True


@pytest.mark.parametrize("form, reason", [
    ({"issuer": "Towngas", "account_reference": "T77-0001-2345"}, "more than three months old"),
    ({"issuer": "CLP", "account_reference": "3000-1234-5821", "bill_date": "2026-01-02"},
     "bill date does not match"),
    ({"issuer": "WSD", "account_reference": "9100-2233-4455"}, "no such bill in your name"),
])
def test_a_bill_that_does_not_prove_the_address_says_why(embedded_app, citizen, form, reason):
    dated = {"Towngas": 200, "CLP": 50, "WSD": 20}[form["issuer"]]
    form = {"bill_date": (_hong_kong_today() - timedelta(days=dated)).isoformat(), **form}
    assert _prove(citizen, **form).status_code == 303
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert "Not verified" in page and reason in page
    assert 'class="proof" data-verified="true"' in page     # the good proof on record stays


def test_a_bill_to_another_address_does_not_verify_it(embedded_app, citizen):
    assert _save(citizen).status_code == 303          # NEW_ADDRESS, not the bill's
    resp = _prove(citizen, issuer="CLP", account_reference="3000-1234-5821",
                  bill_date=_clp_bill_date(embedded_app))
    assert resp.status_code == 303
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert "addressed to another address" in page
    assert 'class="current-proof" data-verified="false"' in page   # kept, as not verified


@pytest.mark.parametrize("form, field", [
    ({"issuer": "PCCW", "account_reference": "1234-5678", "bill_date": "2026-11-01"}, "issuer"),
    ({"issuer": "CLP", "account_reference": "<x>", "bill_date": "2026-11-01"},
     "account_reference"),
    ({"issuer": "CLP", "account_reference": "1234-5678", "bill_date": "01/11/2026"}, "bill_date"),
    ({"issuer": "CLP", "account_reference": "1234-5678", "bill_date": "2026-02-30"}, "bill_date"),
    ({"issuer": "CLP", "account_reference": "1234-5678", "bill_date": "2099-01-01"}, "bill_date"),
])
def test_a_malformed_proof_is_refused_by_field_and_nothing_is_asked(citizen, monkeypatch, form,
                                                                   field):
    asked = []
    monkeypatch.setattr(citizen.gw.router.connectors["utilities"], "bill",
                        lambda *a: asked.append(a))
    resp = _prove(citizen, **form)
    assert resp.status_code == 400 and f'id="pe-{field}"' in resp.get_data(as_text=True)
    assert asked == []


def test_a_field_that_is_not_utf8_is_refused_and_nothing_is_saved(citizen):
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    before = _values(page)
    body = (f"csrf_token={citizen.csrf(page)}&mobile=%2B852+9123+4567&building=%FF%FE"
            "&district=Eastern&region=HK").encode()
    resp = citizen.browser.post("/me/profile", data=body,
                                content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400
    assert _values(citizen.browser.get("/me/profile").get_data(as_text=True)) == before


def test_the_profile_is_edited_over_http_through_the_e_me_connector(tmp_path, request, clock,
                                                                    departments_server):
    config = make_config(tmp_path, "embedded", request, departments_url=departments_server)
    app = build_app(config, clock)
    flow = Flow(app)
    flow.login(HKID, next_url="/me/profile")
    assert _save(flow, mobile="5123 4567").status_code == 303
    app.extensions["cdeg"].close()
    again = Flow(build_app(config, clock))      # a new gateway; e-ME, its own service, kept it
    again.login(HKID, next_url="/me/profile")
    assert _values(again.browser.get("/me/profile").get_data(as_text=True))["mobile"] == \
        "+852 5123 4567"
    again.gw.close()


def test_a_profile_post_missing_fields_is_refused_not_taken_as_blanks(citizen):
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    before = _values(page)
    resp = citizen.browser.post("/me/profile", data={"csrf_token": citizen.csrf(page),
                                                      "mobile": "6123 4567"})
    assert resp.status_code == 400
    assert _values(citizen.browser.get("/me/profile").get_data(as_text=True)) == before


def test_a_district_in_another_region_is_refused(citizen):
    resp = _save(citizen, district="Sham Shui Po", region="HK")
    assert resp.status_code == 400 and 'id="e-region"' in resp.get_data(as_text=True)


def test_moving_takes_the_proof_with_the_old_address(embedded_app, citizen):
    assert _save(citizen).status_code == 303          # NEW_ADDRESS: the CLP bill was for Mei Foo
    page = citizen.browser.get("/me/profile").get_data(as_text=True)
    assert 'class="proof" data-verified="false"' in page
    assert 'class="current-proof" data-verified="false"' in page
    bank = Flow(embedded_app)
    detail = {"type": "cdeg_data", "purpose": "ekyc-account-opening", "access": "once",
              "data_items": ["identity.name_en", "identity.hkid", "identity.date_of_birth",
                             "address.residential", "address.proof"]}
    items = bank.data(bank.tokens(detail)["access_token"]).get_json()["items"]
    assert items["address.proof"]["verified"] is False
    assert items["address.residential"]["verified"] is False


@pytest.mark.parametrize("down", ["eme", "utilities"])
def test_a_source_that_is_down_shows_a_502_page_on_the_profile(citizen, monkeypatch, down):
    from connectors.base import SourceUnavailable

    def refused(*args):
        raise SourceUnavailable("no answer")
    for action in ("profile", "proof", "bill", "update"):
        if hasattr(citizen.gw.router.connectors[down], action):
            monkeypatch.setattr(citizen.gw.router.connectors[down], action, refused)
    resp = citizen.browser.get("/me/profile")
    assert resp.status_code == 502 and "Traceback" not in resp.get_data(as_text=True)
    assert resp.mimetype == "text/html"
