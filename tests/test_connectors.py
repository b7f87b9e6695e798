"""Connectors and the mock department services, in-process and over real HTTP."""
from __future__ import annotations

import gzip
import io
import json
import threading
import time

import pytest
import responses
from werkzeug.serving import make_server

from connectors.base import (MAX_REPLY_BYTES, BadReply, DepartmentsClient, SourceUnavailable,
                             SubjectNotFound)
from connectors.immd import ImmigrationConnector
from connectors.mock.departments import create_app

from .conftest import build_app, make_config
from .flow import BANK_DETAIL, Flow, ledger_snapshot


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


# -- what a department answers is bounded and parsed without a 500 (issue 5, item 15) ----------

IDENTITY = {"name_en": "CHAN, Tai Man", "name_zh": "陳大文", "date_of_birth": "1985-03-14",
            "sex": "M", "as_of": "2026-01-01T00:00:00Z"}
TWENTY_MB = 20 * 1024 * 1024
NESTED_ARRAYS = "[" * 100_000 + "]" * 100_000                 # 100k levels, 200 kB: under the cap
NESTED_OBJECTS = '{"as_of":' * 20_000 + "1" + "}" * 20_000   # 20k levels, 200 kB


def _padded_identity(size: int) -> bytes:
    """A well-formed identity reply, padded with an unknown key to ``size`` bytes: the schema
    ignores unknown keys, so only a size cap refuses it."""
    head = json.dumps(IDENTITY)[:-1].encode() + b', "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


class CountingBody(io.RawIOBase):
    """A response body that counts how many of its bytes the client actually read."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self._data.readinto(buffer)
        self.bytes_read += n
        return n


def _immd(base="http://departments.test"):
    return ImmigrationConnector(DepartmentsClient(base, timeout=(0.5, 2.0)))


@pytest.mark.parametrize("body", [NESTED_ARRAYS, NESTED_OBJECTS], ids=["arrays", "objects"])
def test_deeply_nested_json_from_a_department_is_a_bad_reply_not_a_recursion_error(body):
    assert len(body) < MAX_REPLY_BYTES   # the parser's depth is what refuses it, not the cap
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body=body,
                  content_type="application/json")
        with pytest.raises(BadReply, match="nested too deep"):
            _immd().fetch("A1234563", ["identity.name_en"])


def test_chunked_20mb_answer_without_content_length_is_refused_after_the_cap_not_read_whole():
    counted = CountingBody(_padded_identity(TWENTY_MB))
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body=io.BufferedReader(counted),
                  content_type="application/json")
        with pytest.raises(BadReply, match="more than"):
            _immd().fetch("A1234563", ["identity.name_en"])
        assert "Content-Length" not in mock.calls[0].response.headers
    assert counted.bytes_read <= MAX_REPLY_BYTES + 64 * 1024, counted.bytes_read


def test_declared_content_length_over_the_cap_is_refused_before_reading_the_body():
    counted = CountingBody(_padded_identity(TWENTY_MB))
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body=io.BufferedReader(counted),
                  content_type="application/json", headers={"Content-Length": str(TWENTY_MB)})
        with pytest.raises(BadReply, match="more than"):
            _immd().fetch("A1234563", ["identity.name_en"])
    assert counted.bytes_read == 0


def test_gzip_answer_over_the_cap_once_inflated_is_refused():
    squeezed = gzip.compress(_padded_identity(TWENTY_MB))
    assert len(squeezed) < MAX_REPLY_BYTES         # small on the wire, 20 MB inflated
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body=squeezed,
                  content_type="application/json", headers={"Content-Encoding": "gzip"})
        with pytest.raises(BadReply, match="more than"):
            _immd().fetch("A1234563", ["identity.name_en"])


@pytest.mark.parametrize("body, reason", [
    ("{not json", "malformed JSON"),
    (b"\xff\xfe{}", "malformed JSON"),
    (json.dumps([IDENTITY]), "non-object"),
], ids=["not JSON", "not UTF-8", "an array where an object is expected"])
def test_unparseable_or_wrongly_shaped_answer_is_a_bad_reply(body, reason):
    with responses.RequestsMock() as mock:
        mock.post("http://departments.test/immd/v1/identity", body=body,
                  content_type="application/json")
        with pytest.raises(BadReply, match=reason):
            _immd().fetch("A1234563", ["identity.name_en"])


class _AnsweringInProcess:
    """An in-process department that answers one fixed body."""

    def __init__(self, body):
        self.body = body

    def answer(self, path, payload):
        return 200, self.body


def _deep_dict(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"as_of": value}
    return value


@pytest.mark.parametrize("body", [_deep_dict(100_000),
                                  json.loads(_padded_identity(TWENTY_MB)), [IDENTITY]],
                         ids=["nested 100k levels", "20 MB", "a list"])
def test_in_process_answer_that_is_too_deep_too_large_or_not_an_object_is_a_bad_reply(body):
    client = DepartmentsClient(None, in_process=_AnsweringInProcess(body))
    with pytest.raises(BadReply):
        ImmigrationConnector(client).fetch("A1234563", ["identity.name_en"])


PROFILE = {"mobile": "+852 9123 4567", "email": None, "as_of": "2026-11-01T00:00:00Z",
           "address": {"flat": "A", "floor": "12", "block": None, "building": "Mei Foo",
                       "street": "Broadway", "district": "Sham Shui Po", "region": "KLN"}}
BAD_ANSWERS = {
    "nested 100k levels": NESTED_ARRAYS,
    "20 MB chunked": _padded_identity(TWENTY_MB),
    "not JSON": "<<<not json>>>",
    "a JSON array": json.dumps([IDENTITY]),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_data_api_answers_502_naming_the_source_and_keeps_the_ledger_when_a_department_answers_garbage(
        tmp_path, request, clock, case):
    app = build_app(make_config(tmp_path, "embedded", request,
                                departments_url="http://departments.test"), clock)
    flow = Flow(app)
    url = "http://departments.test/immd/v1/identity"
    answer = BAD_ANSWERS[case]
    counted = CountingBody(answer if isinstance(answer, bytes) else answer.encode())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(url, json=IDENTITY)
        mock.post("http://departments.test/eme/v1/profile", json=PROFILE)
        tokens = flow.tokens()
        assert flow.data(tokens["access_token"]).status_code == 200   # both sources answer well
        mock.replace(responses.POST, url, body=io.BufferedReader(counted),
                     content_type="application/json")
        before = ledger_snapshot(flow.gw)
        resp = flow.data(tokens["access_token"])
    assert resp.status_code == 502, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/problem+json"
    problem = resp.get_json()
    assert problem["type"].endswith("/problems/source-failed") and problem["status"] == 502
    assert problem["title"] == "Bad Gateway"
    assert "immd" in problem["detail"]                # the bad answer, not some other source
    assert counted.bytes_read <= MAX_REPLY_BYTES + 64 * 1024, counted.bytes_read
    assert resp.headers["Retry-After"]
    assert "Traceback" not in resp.get_data(as_text=True)
    assert ledger_snapshot(flow.gw) == before
    app.extensions["cdeg"].close()


@pytest.fixture
def streaming_department():
    """A real HTTP department that answers a 20 MB JSON body in chunks (no Content-Length), with
    the status it is told, and records how far each answer was written before the client left."""
    state = {"status": "200 OK", "started": 0, "finished": 0, "closed": 0, "sent": 0}
    lock = threading.Lock()
    piece = b"x" * 65536

    def app(environ, start_response):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(state["status"], [("Content-Type", "application/json")])

        def body():
            with lock:
                state["started"] += 1
            try:
                yield json.dumps(IDENTITY)[:-1].encode() + b', "pad": "'
                for _ in range(TWENTY_MB // len(piece)):
                    yield piece
                    with lock:
                        state["sent"] += len(piece)
                yield b'"}'
                with lock:
                    state["finished"] += 1
            finally:
                with lock:
                    state["closed"] += 1
        return body()

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def settled():
        """Wait until every answer the server started has ended (written or cut off)."""
        for _ in range(200):
            with lock:
                if state["closed"] == state["started"]:
                    return dict(state)
            time.sleep(0.05)
        return dict(state)

    yield f"http://127.0.0.1:{server.server_port}", state, settled
    server.shutdown()


def test_real_http_chunked_20mb_answer_is_cut_off_at_the_cap(streaming_department):
    base, state, settled = streaming_department
    with pytest.raises(BadReply, match="more than"):
        _immd(base).fetch("A1234563", ["identity.name_en"])
    seen = settled()
    assert seen["started"] == 1
    assert seen["finished"] == 0, "the whole 20 MB answer was read"
    assert seen["sent"] < TWENTY_MB


def test_real_http_503_answers_are_retried_without_draining_their_bodies(streaming_department):
    base, state, settled = streaming_department
    state["status"] = "503 Service Unavailable"
    with pytest.raises(SourceUnavailable):
        _immd(base).fetch("A1234563", ["identity.name_en"])
    seen = settled()
    assert seen["started"] == 3                   # the first try and two retries
    assert seen["finished"] == 0, "a 20 MB error body was read to the end"
