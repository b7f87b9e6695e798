"""Departments pull pre-filled forms (SPEC section 4): forms are data (schemas/forms/), each
field shaped from a catalogue item by a named transform; a prefill is a data release through
the same steps as GET /api/v1/data (route ``form``), filling only what the consent covers."""
from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import select

from gateway.store.db import audit_entries
from schemas.forms import FormError, load_file, load_folder
from schemas.forms import transforms as t

from .flow import BANK_DETAIL, TD, Flow

TD_DETAIL = {"type": "cdeg_data", "purpose": "vehicle-licence-renewal", "access": "once",
             "data_items": ["identity.name_en", "identity.hkid", "address.residential",
                            "contact.mobile"]}


def _prefill(flow, token, form_id="vehicle-licence-renewal", **kwargs):
    return flow.requester.post(f"/api/v1/forms/{form_id}/prefill",
                               headers={"Authorization": f"Bearer {token}"}, **kwargs)


def _entries(gw, consent_id):
    with gw.db.connect() as conn:
        return [json.loads(e) for e in conn.execute(select(audit_entries.c.entry).where(
            audit_entries.c.consent_id == consent_id).order_by(audit_entries.c.id)).scalars()]


# -- the transforms ----------------------------------------------------------------------------

def test_an_english_name_splits_into_surname_and_given_names():
    assert (t.surname("CHAN, Tai Man"), t.given_names("CHAN, Tai Man")) == ("CHAN", "Tai Man")
    assert (t.surname("LEE Ka Ho"), t.given_names("LEE  Ka   Ho")) == ("LEE", "Ka Ho")
    for bad in ("CHAN", "", None, ", Tai Man"):
        with pytest.raises(t.Unshapeable):
            t.surname(bad)


def test_a_date_is_written_as_hong_kong_forms_write_it():
    assert t.date_dd_mm_yyyy("1985-03-14") == "14/03/1985"
    for bad in ("14/03/1985", "1985-3-14", 19850314, "1985-03-14\n"):
        with pytest.raises(t.Unshapeable):
            t.date_dd_mm_yyyy(bad)


def test_a_structured_address_becomes_the_forms_three_lines():
    address = {"flat": "12A", "floor": "12", "block": "Block 3", "building": "Mei Foo Sun Chuen",
               "street": "1 Broadway", "district": "Sham Shui Po", "region": "KLN"}
    assert t.address_line_1(address) == "Flat 12A, 12/F, Block 3"
    assert t.address_line_2(address) == "Mei Foo Sun Chuen, 1 Broadway"
    assert t.address_line_3(address) == "Sham Shui Po, Kowloon"
    assert t.address_line_1({**address, "block": None, "flat": None}) == "12/F"
    with pytest.raises(t.Unshapeable):
        t.address_line_1({"district": "Eastern", "region": "HK"})
    with pytest.raises(t.Unshapeable):
        t.address_line_3("12A Broadway")


def test_an_address_with_no_unit_moves_up_a_line():
    village = {"flat": None, "floor": None, "block": None, "building": "Lot 123 Sheung Shui Wai",
               "street": "San Tin Road", "district": "North", "region": "NT"}
    assert t.address_line_1(village) == "Lot 123 Sheung Shui Wai"
    assert t.address_line_2(village) == "San Tin Road"
    assert t.address_line_3(village) == "North, New Territories"
    with pytest.raises(t.Unshapeable):
        t.address_line_2({**village, "street": None})


def test_a_mobile_loses_its_country_code():
    assert t.local_mobile("+852 9123 4567") == "91234567"
    assert t.local_mobile("6234-5678") == "62345678"
    for bad in ("+852 1234 5678", "9123 456", "+86 139 1234 5678", None):
        with pytest.raises(t.Unshapeable):
            t.local_mobile(bad)


# -- forms as data -----------------------------------------------------------------------------

def test_the_three_forms_load_and_every_field_names_a_catalogue_item():
    from schemas.forms import forms
    assert set(forms()) >= {"bank-account-opening", "vehicle-licence-renewal",
                            "public-housing-application"}


@pytest.mark.parametrize("change, where", [
    (lambda d: d["fields"][0].update(transform="uppercase"), "fields[0].transform"),
    (lambda d: d["fields"][1].update(item="identity.shoe_size"), "fields[1].item"),
    (lambda d: d["fields"][0].pop("label"), "fields[0].label"),
    (lambda d: d["fields"][2].update(name=d["fields"][0]["name"]), "fields[2].name"),
    (lambda d: d["fields"][0].update(required="yes"), "fields[0].required"),
    (lambda d: d.update(colour="blue"), "colour"),
    (lambda d: d["title"].pop("zh-HK"), "title"),
    (lambda d: d.update(form_id="another-form"), "form_id"),
    (lambda d: d["fields"][0].update(item=["identity.name_en"]), "fields[0].item"),   # types:
    (lambda d: d["fields"][0].update(transform=["surname"]), "fields[0].transform"),  # refused,
    (lambda d: d.update({7: "seven"}), "7"),                                          # no crash
])
def test_a_malformed_form_file_is_refused_naming_the_file_and_key(tmp_path, change, where):
    from schemas.forms import FORMS_DIR
    doc = yaml.safe_load((FORMS_DIR / "vehicle-licence-renewal.yaml").read_text(encoding="utf-8"))
    change(doc)
    path = tmp_path / "vehicle-licence-renewal.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(FormError) as refused:
        load_folder(tmp_path)
    assert refused.value.where == f"{path}: {where}"


def test_a_form_file_that_is_not_utf8_or_not_yaml_is_refused(tmp_path):
    for body in (b"form_id: \xff\xfe\n", b"fields: [unclosed\n"):
        path = tmp_path / "broken.yaml"
        path.write_bytes(body)
        with pytest.raises(FormError) as refused:
            load_file(path)
        assert str(path) in str(refused.value)


def test_a_policy_naming_an_unknown_form_is_refused_naming_the_key(tmp_path):
    from policies.engine import PolicyError, POLICY_DIR, load_file as load_policy
    doc = yaml.safe_load((POLICY_DIR / "transport-department.yaml").read_text(encoding="utf-8"))
    doc["purposes"]["vehicle-licence-renewal"]["forms"] = ["vehicle-licence-renewal", "no-such"]
    path = tmp_path / "td.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert "purposes.vehicle-licence-renewal.forms[1]" in str(refused.value)


# -- the API -----------------------------------------------------------------------------------

def test_the_forms_are_listed_for_a_requester(flow):
    token = flow.tokens()["access_token"]
    resp = flow.requester.get("/api/v1/forms", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    listed = {f["form_id"]: f for f in resp.get_json()["forms"]}
    assert listed["vehicle-licence-renewal"]["title"]["zh-HK"] == "車輛牌照續期"
    field = listed["vehicle-licence-renewal"]["fields"][0]
    assert set(field) == {"name", "label", "item", "required"}
    assert flow.requester.get("/api/v1/forms").status_code == 401


def test_a_department_pulls_a_prefilled_vehicle_licence_renewal(app):
    td = Flow(app, TD)
    tokens = td.tokens(TD_DETAIL)
    resp = _prefill(td, tokens["access_token"])
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["form_id"] == "vehicle-licence-renewal"
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["owner_surname"]["value"] == "CHAN"
    assert fields["owner_given_names"]["value"] == "Tai Man"
    assert fields["hkid"]["value"] == "A123456(3)"
    assert fields["address_line_1"]["value"] == "Flat 12A, 12/F, Block 3"
    assert fields["address_line_3"]["value"] == "Sham Shui Po, Kowloon"
    assert fields["daytime_phone"] == {
        "name": "daytime_phone", "label": {"en": "Daytime contact number", "zh-HK": "日間聯絡電話"},
        "value": "91234567", "item": "contact.mobile", "source": "eme", "verified": False,
        "as_of": fields["daytime_phone"]["as_of"]}
    assert fields["hkid"]["source"] == "immd" and fields["hkid"]["verified"] is True
    # not consented: missing, never filled
    assert set(body["missing"]) == {"owner_chinese_name", "email"}
    released = [e for e in _entries(td.gw, tokens["consent_id"]) if e["event"] == "data.released"]
    assert len(released) == 1 and released[0]["route"] == "form"
    assert set(released[0]["items"]) == set(TD_DETAIL["data_items"])   # what left, no more
    assert "A123456" not in json.dumps(released)


def test_a_once_consent_ends_with_its_prefill(app):
    td = Flow(app, TD)
    tokens = td.tokens(TD_DETAIL)
    assert _prefill(td, tokens["access_token"]).status_code == 200
    again = _prefill(td, tokens["access_token"])
    assert again.status_code == 401
    assert again.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_a_revoked_consent_prefills_nothing(app):
    td = Flow(app, TD)
    tokens = td.tokens({**TD_DETAIL, "access": "ongoing", "duration": "P30D"})
    assert _prefill(td, tokens["access_token"]).status_code == 200
    td.revoke_as_citizen(tokens["consent_id"])
    before = _entries(td.gw, tokens["consent_id"])
    refused = _prefill(td, tokens["access_token"])
    assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
    assert [e for e in _entries(td.gw, tokens["consent_id"])
            if e["event"] == "data.released"] == [e for e in before
                                                  if e["event"] == "data.released"]


def test_an_unknown_form_is_a_404_problem_and_releases_nothing(app):
    td = Flow(app, TD)
    tokens = td.tokens(TD_DETAIL)
    resp = _prefill(td, tokens["access_token"], "no-such-form")
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["type"].endswith("/problems/unknown-form")
    assert not [e for e in _entries(td.gw, tokens["consent_id"]) if e["event"] == "data.released"]
    assert _prefill(td, tokens["access_token"]).status_code == 200   # the once consent still there


def test_a_form_the_requesters_policy_does_not_name_is_refused(flow):
    tokens = flow.tokens(BANK_DETAIL)     # the bank's policy names bank-account-opening only
    resp = _prefill(flow, tokens["access_token"], "vehicle-licence-renewal")
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/problems/form-not-allowed")
    assert _prefill(flow, tokens["access_token"], "bank-account-opening").status_code == 200


SLOW, DOWN, GARBAGE = "slow", "down", "garbage"


@pytest.mark.parametrize("fault", [SLOW, DOWN, GARBAGE])
@pytest.mark.parametrize("source, path", [("eme", "/eme/v1/profile"),
                                          ("immd", "/immd/v1/identity"),
                                          ("utilities", "/utilities/v1/address-proof")])
def test_a_source_slow_down_or_answering_garbage_fails_the_prefill_naming_it(
        tmp_path, request, clock, fault, source, path):
    """Over HTTP (``responses``): e-ME, ImmD or a utility slow, refusing connections, or
    answering garbage — the prefill is a 504 or 502 problem naming that source, nothing is released, and
    the same token prefills once it answers again. Never a form with fields silently dropped."""
    import requests as requests_lib
    import responses

    from connectors.mock.departments import Departments

    from .conftest import build_app, make_config
    base = "http://departments.test"
    app = build_app(make_config(tmp_path, "embedded", request, departments_url=base), clock)
    if source == "utilities":    # the bank's form is the one with an address proof
        td, detail, form_id = Flow(app), {**BANK_DETAIL, "data_items": [
            *BANK_DETAIL["data_items"], "address.proof"]}, "bank-account-opening"
    else:
        td, detail, form_id = Flow(app, TD), TD_DETAIL, "vehicle-licence-renewal"
    mock_departments = Departments()

    def real(req):
        status, body = mock_departments.answer(req.path_url, json.loads(req.body))
        return status, {"Content-Type": "application/json"}, json.dumps(body)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            for service in ("/immd/v1/identity", "/eme/v1/profile", "/utilities/v1/address-proof"):
                mock.add_callback(responses.POST, base + service, callback=real)
            tokens = td.tokens(detail)
            broken = {SLOW: dict(body=requests_lib.ReadTimeout("read timed out")),
                      DOWN: dict(body=requests_lib.ConnectionError("refused")),
                      GARBAGE: dict(body="<html>oops</html>", content_type="text/html")}[fault]
            mock.replace(responses.POST, base + path, **broken)
            before = [e for e in _entries(td.gw, tokens["consent_id"])
                      if e["event"] == "data.released"]
            resp = _prefill(td, tokens["access_token"], form_id)
            problem = resp.get_json()
            assert (resp.status_code, problem["type"].rsplit("/", 1)[1]) == (
                (504, "source-timeout") if fault == SLOW else (502, "source-failed"))
            assert resp.mimetype == "application/problem+json" and source in problem["detail"]
            assert [e for e in _entries(td.gw, tokens["consent_id"])
                    if e["event"] == "data.released"] == before
            mock.replace(responses.CallbackResponse(responses.POST, base + path, callback=real))
            assert _prefill(td, tokens["access_token"], form_id).status_code == 200  # consent kept
    finally:
        app.extensions["cdeg"].close()


def test_a_prefill_over_real_http_against_the_mock_departments(tmp_path, request, clock,
                                                               departments_server):
    """The department services run as their own HTTP server: the prefill reads through the
    gateway's one HTTP session, as in production."""
    from .conftest import build_app, make_config
    app = build_app(make_config(tmp_path, "embedded", request,
                                departments_url=departments_server), clock)
    try:
        td = Flow(app, TD)
        tokens = td.tokens(TD_DETAIL)
        resp = _prefill(td, tokens["access_token"])
        assert resp.status_code == 200, resp.get_json()
        fields = {f["name"]: f["value"] for f in resp.get_json()["fields"]}
        assert fields["owner_surname"] == "CHAN" and fields["daytime_phone"] == "91234567"
    finally:
        app.extensions["cdeg"].close()


# -- the consent screen: each value and its source, optional items the citizen may untick -----

def _untick(td, detail, keep_optional: list[str]):
    resp = td.par(detail)
    td.login()
    request_uri = resp.get_json()["request_uri"]
    page = td.consent_page(request_uri).get_data(as_text=True)
    offered = [i for i in detail["data_items"] if f'name="offered" value="{i}"' in page]
    answer = td.browser.post("/oauth/authorize", data={
        "csrf_token": td.csrf(page), "client_id": td.client_id, "request_uri": request_uri,
        "decision": "approve", "offered": offered, "items": keep_optional})
    return page, td.token(td.query(answer)["code"]).get_json()


def test_the_consent_screen_shows_values_and_lets_only_optional_items_be_unticked(app):
    td = Flow(app, TD)
    page, tokens = _untick(td, TD_DETAIL, keep_optional=[])
    # values and their sources are on the screen before approval
    assert "CHAN, Tai Man" in page and "immd" in page and "+852 9123 4567" in page
    # contact.mobile is optional in the Transport Department's policy; the rest are required
    assert 'name="items" value="contact.mobile"' in page
    for required in ("identity.name_en", "identity.hkid", "address.residential"):
        assert f'name="items" value="{required}"' not in page
    kept = ["identity.name_en", "identity.hkid", "address.residential"]
    assert tokens["authorization_details"][0]["data_items"] == kept
    refused = td.data(tokens["access_token"], items="contact.mobile")   # releases nothing
    assert refused.status_code == 403
    body = td.data(tokens["access_token"]).get_json()                   # the once read
    assert sorted(body["items"]) == sorted(kept)


def test_an_unticked_item_leaves_its_form_field_missing(app):
    td = Flow(app, TD)
    _, tokens = _untick(td, TD_DETAIL, keep_optional=[])
    body = _prefill(td, tokens["access_token"]).get_json()
    assert "daytime_phone" in body["missing"]
    assert "daytime_phone" not in {f["name"] for f in body["fields"]}


def test_a_required_item_cannot_be_unticked_by_a_crafted_post(app):
    td = Flow(app, TD)
    resp = td.par(TD_DETAIL)
    td.login()
    request_uri = resp.get_json()["request_uri"]
    page = td.consent_page(request_uri).get_data(as_text=True)
    answer = td.browser.post("/oauth/authorize", data={
        "csrf_token": td.csrf(page), "client_id": td.client_id, "request_uri": request_uri,
        "decision": "approve", "offered": ["identity.hkid", "contact.mobile"],
        "items": ["contact.mobile"]})
    tokens = td.token(td.query(answer)["code"]).get_json()
    assert tokens["authorization_details"][0]["data_items"] == TD_DETAIL["data_items"]


def test_the_gateway_does_not_start_on_a_stored_policy_naming_a_form_that_is_gone(tmp_path,
                                                                                request, clock):
    import copy

    from sqlalchemy import update

    from gateway import create_app
    from gateway.store.db import requesters
    from policies.engine import PolicyError

    from .conftest import build_app, make_config
    config = make_config(tmp_path, "embedded", request)
    app = build_app(config, clock)
    gw = app.extensions["cdeg"]
    with gw.db.connect() as conn:
        policy = copy.deepcopy(conn.execute(select(requesters.c.policy).where(
            requesters.c.client_id == TD)).scalar())
    policy["purposes"]["vehicle-licence-renewal"]["forms"] = ["vehicle-licence-renewal",
                                                              "withdrawn-form"]
    with gw.transaction() as conn:
        conn.execute(update(requesters).where(requesters.c.client_id == TD).values(policy=policy))
    gw.close()
    with pytest.raises(PolicyError) as refused:
        create_app(config, clock=clock)
    assert "policy of transport-department" in str(refused.value)
    assert "purposes.vehicle-licence-renewal.forms[1]" in str(refused.value)


def test_a_source_with_no_record_for_the_citizen_leaves_its_fields_missing(app):
    """WONG Siu Ling has no address proof at the utilities: the bank's form comes back with
    that field missing — not a 502 saying the utilities are down."""
    bank = Flow(app)
    detail = {**BANK_DETAIL, "data_items": [*BANK_DETAIL["data_items"], "address.proof"]}
    resp = bank.par(detail)
    bank.login("G123456(A)")
    answer = bank.decide(resp.get_json()["request_uri"])
    tokens = bank.token(bank.query(answer)["code"]).get_json()
    resp = _prefill(bank, tokens["access_token"], "bank-account-opening")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert "address_proof" in body["missing"]
    assert {f["name"]: f["value"] for f in body["fields"]}["surname"] == "WONG"
    released = [e for e in _entries(bank.gw, tokens["consent_id"]) if e["event"] == "data.released"]
    assert "address.proof" not in released[-1]["items"]      # only what some field shows


def test_a_prefill_under_a_policy_allowing_none_of_the_items_is_refused_like_a_data_call(flow):
    from .test_policy_narrowing import _narrow
    tokens = flow.tokens(BANK_DETAIL)
    _narrow(flow, lambda p: p.update(items={"required": [], "optional": ["contact.email"]}))
    resp = _prefill(flow, tokens["access_token"], "bank-account-opening")
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/problems/outside-consent")


def test_a_policy_naming_a_form_it_cannot_fill_at_all_is_refused(tmp_path):
    from policies.engine import POLICY_DIR, PolicyError
    from policies.engine import load_file as load_policy
    doc = yaml.safe_load((POLICY_DIR / "transport-department.yaml").read_text(encoding="utf-8"))
    doc["purposes"]["vehicle-licence-renewal"]["items"] = {"required": ["identity.sex"],
                                                           "optional": []}
    path = tmp_path / "td.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert "forms[0]" in str(refused.value) and "none of the items" in str(refused.value)


def test_address_lines_keep_what_the_citizen_already_wrote():
    address = {"flat": "Flat 12A", "floor": "12/F", "block": None, "building": "Mei Foo",
               "street": None, "district": "Sham Shui Po", "region": "KLN"}
    assert t.address_line_1(address) == "Flat 12A, 12/F"
    assert t.address_line_1({**address, "flat": "12室", "floor": "G/F"}) == "12室, G/F"


def test_the_consent_screen_shows_an_address_proof_as_a_citizen_reads_it(flow):
    detail = {**BANK_DETAIL, "data_items": [*BANK_DETAIL["data_items"], "address.proof"]}
    resp = flow.par(detail)
    flow.login()
    page = flow.consent_page(resp.get_json()["request_uri"]).get_data(as_text=True)
    assert "CLP ****5821, " in page and "account_reference" not in page


def test_odd_requests_to_the_forms_api_get_problems_not_500s(app):
    td = Flow(app, TD)
    token = td.tokens(TD_DETAIL)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    asked = td.requester.post("/api/v1/forms/vehicle-licence-renewal/prefill?fields=all",
                              headers=auth)
    assert asked.status_code == 400 and asked.get_json()["errors"] == {"fields": ["unknown parameter"]}
    for odd in ("../etc/passwd", "%00", "x" * 300, "VEHICLE-LICENCE-RENEWAL"):
        resp = td.requester.post(f"/api/v1/forms/{odd}/prefill", headers=auth)
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json", odd
    assert td.requester.post("/api/v1/forms/vehicle-licence-renewal/prefill").status_code == 401
    assert td.requester.post("/api/v1/forms/vehicle-licence-renewal/prefill",
                             headers={"Authorization": "Bearer nonsense"}).status_code == 401
    wrong_method = td.requester.get("/api/v1/forms/vehicle-licence-renewal/prefill", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.mimetype == "application/problem+json"
    assert td.requester.head("/api/v1/forms", headers=auth).status_code == 405
    assert _prefill(td, token).status_code == 200   # none of that spent the once consent


def test_a_revocation_wins_against_concurrent_prefills_and_a_once_consent_fills_once(app):
    """Several threads pull the form while the citizen revokes (the real PostgreSQL on the
    services backend): once the revocation has answered no prefill succeeds, and no release
    follows the revocation in the log. A once consent pulled at the same moment fills once."""
    import threading

    from .test_revocation_race import _wait_until
    td = Flow(app, TD)
    tokens = td.tokens({**TD_DETAIL, "access": "ongoing", "duration": "P30D"})
    stop, revoked = threading.Event(), threading.Event()
    statuses, late = [], []

    def puller():
        client = app.test_client()
        while not stop.is_set():
            after = revoked.is_set()
            resp = client.post("/api/v1/forms/vehicle-licence-renewal/prefill",
                               headers={"Authorization": f"Bearer {tokens['access_token']}"})
            statuses.append(resp.status_code)
            if after and resp.status_code == 200:
                late.append(resp.status_code)
    threads = [threading.Thread(target=puller) for _ in range(3)]
    for thread in threads:
        thread.start()
    _wait_until(lambda: statuses.count(200) >= 6)
    assert td.revoke_as_citizen(tokens["consent_id"]).status_code == 303
    revoked.set()
    seen = len(statuses)
    _wait_until(lambda: len(statuses) >= seen + 6)
    stop.set()
    for thread in threads:
        thread.join()
    assert late == [] and set(statuses) <= {200, 401}, statuses
    events = [e["event"] for e in _entries(td.gw, tokens["consent_id"])]
    assert "data.released" not in events[events.index("consent.revoked"):]

    once = td.tokens(TD_DETAIL)
    answers = []
    racers = [threading.Thread(target=lambda: answers.append(app.test_client().post(
        "/api/v1/forms/vehicle-licence-renewal/prefill",
        headers={"Authorization": f"Bearer {once['access_token']}"}).status_code))
        for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(answers) == [200, 401, 401, 401], answers
    assert [e["event"] for e in _entries(td.gw, once["consent_id"])].count("data.released") == 1
