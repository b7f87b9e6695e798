"""Connectors and the mock department services, in-process and over real HTTP."""
from __future__ import annotations

import threading

import pytest
import responses
from werkzeug.serving import make_server

from connectors.base import BadReply, DepartmentsClient, SourceUnavailable, SubjectNotFound
from connectors.immd import ImmigrationConnector
from connectors.mock.departments import create_app

from .conftest import build_app, make_config
from .flow import BANK_DETAIL, Flow


@pytest.fixture
def departments_server():
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_mock_departments_answer_lookups_and_refuse_bad_ones():
    client = create_app().test_client()
    assert client.post("/immd/v1/identity", json={"hkid": "A1234563"}).get_json()["name_zh"] == "陳大文"
    assert client.post("/immd/v1/identity", json={"hkid": "Z0000000"}).status_code == 404
    assert client.post("/immd/v1/identity", data="not json").status_code == 400
    assert client.post("/nowhere", json={"hkid": "A1234563"}).status_code == 404


def test_gateway_reads_through_the_departments_over_http(tmp_path, request, clock,
                                                         departments_server):
    app = build_app(make_config(tmp_path, "embedded", request,
                                departments_url=departments_server), clock)
    flow = Flow(app)
    body = flow.data(flow.tokens()["access_token"]).get_json()
    assert set(body["items"]) == set(BANK_DETAIL["data_items"])
    assert body["items"]["identity.name_en"]["value"] == "CHAN, Tai Man"
    app.extensions["cdeg"].close()


def test_http_connector_errors_are_classified():
    client = DepartmentsClient("http://departments.test", timeout=(0.5, 0.5))
    immd = ImmigrationConnector(client)
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", status=404, json={})
        with pytest.raises(SubjectNotFound):
            immd.fetch("A1234563", ["identity.name_en"])
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body="<html>", status=200,
                  content_type="text/html")
        with pytest.raises(BadReply):
            immd.fetch("A1234563", ["identity.name_en"])
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", status=302,
                  headers={"Location": "http://evil.example/"})
        with pytest.raises(BadReply):   # redirects are not followed
            immd.fetch("A1234563", ["identity.name_en"])


def test_unreachable_department_is_source_unavailable():
    client = DepartmentsClient("http://127.0.0.1:9", timeout=(0.2, 0.2))
    with pytest.raises(SourceUnavailable):
        ImmigrationConnector(client).fetch("A1234563", ["identity.name_en"])
