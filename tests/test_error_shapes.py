"""One error family, rendered once, in the shape of the edge that served the request: RFC 6749
JSON at the OAuth endpoints, RFC 9457 problem documents at the API and the well-known
endpoints, a page in the citizen's language on the citizen pages (authorize included)."""
from __future__ import annotations

import threading

import pytest

from gateway import errors
from gateway.config import Config, ConfigError

from .conftest import build_app, make_config
from .flow import HKID, Flow


def test_every_error_class_carries_its_http_meaning():
    assert (errors.InvalidToken.status, errors.InvalidToken.bearer_error) == (401, "invalid_token")
    assert (errors.OutsideConsent.status, errors.OutsideConsent.bearer_error) == \
        (403, "insufficient_scope")
    assert errors.ConsentNotFound.status == 404 and errors.TransitionRefused.status == 409
    assert errors.Contention().headers == {"Retry-After": "1"}
    assert errors.SourceUnavailable().headers == {"Retry-After": "10"}
    assert errors.Throttled(7).headers == {"Retry-After": "7"}


def test_a_wrong_method_on_the_authorize_page_is_a_page_not_an_oauth_error(flow):
    resp = flow.browser.put("/oauth/authorize")
    assert resp.status_code == 405 and resp.mimetype == "text/html"
    assert "POST" in resp.headers["Allow"]


def test_a_wrong_method_on_an_oauth_endpoint_is_an_oauth_error(flow):
    resp = flow.requester.get("/oauth/par")
    assert resp.status_code == 405 and resp.get_json()["error"] == "invalid_request"
    assert resp.headers["Cache-Control"] == "no-store"


def test_an_unknown_path_under_the_well_known_edge_is_a_problem_document(flow):
    resp = flow.requester.get("/.well-known/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


def test_the_cdi_edge_answers_in_problem_documents(flow):
    resp = flow.requester.get("/cdi/v1/queries/q-1")        # no FI assertion
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    resp = flow.requester.get("/cdi/v1/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    resp = flow.requester.put("/cdi/v1/queries")
    assert resp.status_code == 405 and resp.mimetype == "application/problem+json"


def test_items_outside_the_consent_name_insufficient_scope_alone(flow):
    tokens = flow.tokens()
    resp = flow.data(tokens["access_token"], items="contact.email")
    assert resp.status_code == 403
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'


def test_an_unknown_citizen_page_is_a_page(flow):
    resp = flow.browser.get("/me/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "text/html"


def test_a_bearer_refusal_names_its_error_in_www_authenticate(flow):
    resp = flow.requester.get("/api/v1/data", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert resp.get_json()["type"].endswith("/problems/invalid-token")


def test_a_form_without_its_csrf_token_is_refused_in_the_pages_language(flow):
    flow.browser.get("/login?lang=zh-HK")
    resp = flow.browser.post("/login", data={"hkid": HKID})
    assert resp.status_code == 400
    assert "表格已失效" in resp.get_data(as_text=True)


def test_too_many_logins_from_one_address_are_refused_in_the_pages_language(tmp_path, request,
                                                                            clock):
    app = build_app(make_config(tmp_path, "embedded", request, login_rate_per_minute=1), clock)
    browser = app.test_client()
    page = browser.get("/login?lang=zh-HK").get_data(as_text=True)
    for expected in (303, 429):
        resp = browser.post("/login", data={"csrf_token": Flow.csrf(page), "hkid": HKID})
        assert resp.status_code == expected
    text = resp.get_data(as_text=True)
    assert "嘗試次數太多" in text and "too many requests" not in text.lower()
    assert int(resp.headers["Retry-After"]) >= 1


def test_a_database_that_does_not_answer_is_503_not_500(flow, monkeypatch):
    """The engine maps the driver's error (store/db.py); the page says so, briefly."""
    tokens = flow.tokens()
    flow.gw.db.dispose()
    refuse = _refuse_postgresql if flow.gw.db.dialect.name == "postgresql" else _refuse_sqlite
    monkeypatch.setattr(flow.gw.db.pool, "_creator", refuse)
    if flow.gw.prepared is not None:      # the data path's own connections (store/prepared.py)
        flow.gw.prepared.close()
        monkeypatch.setattr(flow.gw.prepared, "connect", refuse)
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    body = resp.get_json()
    assert body["type"].endswith("/problems/unavailable")
    assert body["detail"] == "the database did not answer; try again shortly"  # no driver words


def test_a_pool_with_no_connection_free_in_time_is_503(flow, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    tokens = flow.tokens()

    def exhausted(*args, **kwargs):
        raise PoolTimeout("QueuePool limit reached")

    monkeypatch.setattr(flow.gw.db.pool, "connect", exhausted)   # every checkout, all paths
    if flow.gw.prepared is not None:      # and the data path's own pool: every slot taken
        taken = threading.BoundedSemaphore(1)
        taken.acquire()
        monkeypatch.setattr(flow.gw.prepared, "_slots", taken)
        monkeypatch.setattr(flow.gw.prepared, "timeout", 0.05)
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 503 and resp.mimetype == "application/problem+json"


def _refuse_sqlite(*args, **kwargs):
    import sqlite3
    raise sqlite3.OperationalError("unable to open database file")


def _refuse_postgresql(*args, **kwargs):
    import psycopg
    raise psycopg.OperationalError("connection refused")


@pytest.mark.parametrize("change", [{"access_token_ttl": 601}, {"authorization_code_ttl": 61},
                                    {"pushed_request_ttl": 30}, {"login_code_attempts": 0},
                                    {"job_timeout": "soon"},
                                    {"job_timeout": 300, "job_stale_after": 300}])
def test_limits_outside_the_contract_are_refused_at_start(tmp_path, change):
    with pytest.raises(ConfigError):
        Config(instance_dir=tmp_path, **change).validate()
