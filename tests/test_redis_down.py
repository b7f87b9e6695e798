"""Redis down: nothing is minted or released (503 + Retry-After), the ledger is untouched,
and the gateway recovers by itself when Redis returns. Uses a private redis-server of its own."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from .conftest import build_app, make_config
from .flow import Flow, ledger_snapshot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp_path):
        binary = shutil.which("redis-server")
        if not binary:
            pytest.fail("redis-server must be installed for the Redis outage tests")
        self.binary, self.dir, self.port, self.proc = binary, tmp_path, _free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("private redis-server did not start")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def outage(tmp_path, request, clock):
    server = PrivateRedis(tmp_path)
    server.start()
    config = make_config(tmp_path, "services", request, redis_url=server.url)
    app = build_app(config, clock)
    yield server, Flow(app)
    server.stop()
    app.extensions["cdeg"].close()


def test_redis_down_mints_no_token_releases_no_data_and_recovers(outage):
    server, flow = outage
    tokens = flow.tokens()
    code = flow.approved_code()
    server.stop()
    before = ledger_snapshot(flow.gw)

    minted = flow.token(code)
    assert minted.status_code == 503 and minted.headers["Retry-After"]
    assert minted.get_json()["error"] == "temporarily_unavailable"

    read = flow.data(tokens["access_token"])
    assert read.status_code == 503 and read.headers["Retry-After"]
    assert read.mimetype == "application/problem+json"

    assert flow.requester.get("/readyz").status_code == 503
    assert flow.requester.get("/healthz").status_code == 200
    assert ledger_snapshot(flow.gw) == before

    server.start()
    assert flow.requester.get("/readyz").status_code == 200
    assert flow.data(tokens["access_token"]).status_code == 200
    assert flow.token(code).status_code == 200


def test_citizen_pages_answer_503_not_500_while_redis_is_down(outage):
    server, flow = outage
    flow.login()
    page = flow.browser.get("/login").get_data(as_text=True)
    server.stop()
    resp = flow.browser.get("/me")
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    fresh = flow.app.test_client()
    resp = fresh.post("/login", data={"csrf_token": flow.csrf(page), "hkid": "A123456(3)"})
    assert resp.status_code in (400, 503)  # no session to hold the CSRF token, or no Redis
    assert "Traceback" not in resp.get_data(as_text=True)


def test_login_code_is_not_compared_while_redis_is_down(outage):
    """The wrong-code budgets live in Redis: without it no code is compared (503, never 500)."""
    import re

    from gateway import mock_iam_smart
    from gateway.errors import StoreUnavailable
    server, flow = outage
    pending, code = mock_iam_smart.start(flow.gw, "A123456(3)")
    page = flow.browser.get("/login").get_data(as_text=True)
    started = flow.browser.post("/login", data={"csrf_token": flow.csrf(page),
                                                "hkid": "A123456(3)"})
    page = flow.browser.get(started.headers["Location"]).get_data(as_text=True)
    shown = re.search(r'id="demo-code">(\d{6})<', page).group(1)
    server.stop()
    with pytest.raises(StoreUnavailable):
        mock_iam_smart.verify(flow.gw, pending, code)
    resp = flow.browser.post("/login/code", data={"csrf_token": flow.csrf(page), "code": shown})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert "Traceback" not in resp.get_data(as_text=True)


def test_redis_down_when_a_cdi_query_arrives_stores_nothing_and_recovers(outage):
    from sqlalchemy import func, select

    from gateway.store.db import cdi_queries, outbox

    from .cdi_fi import FIClient
    server, flow = outage
    tokens = flow.tokens()
    fi = FIClient(flow)
    server.stop()
    resp = fi.submit(fi.message(tokens["access_token"], ["identity.hkid"], query_id="q-down"))
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert resp.mimetype == "application/problem+json"
    with flow.gw.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cdi_queries)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 0
    server.start()
    resp = fi.submit(fi.message(tokens["access_token"], ["identity.hkid"], query_id="q-down"))
    assert resp.status_code == 202
