"""GET /metrics (SPEC 10): Prometheus text for operators — requests by route and status with
their latency, tokens minted, releases by item and route, connector calls by source, and from
the ledger consents by state and jobs; a token guards it (outside demo mode it is required);
under several gunicorn workers the counts are the sum of them all."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import REDIS_URL, TEST_DATA_KEY


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(flow) -> dict:
    resp = flow.requester.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return samples(resp.get_data(as_text=True))


def test_metrics_move_as_the_gateway_works(flow):
    before = scrape(flow)
    tokens = flow.tokens()
    assert flow.data(tokens["access_token"]).status_code == 200
    flow.data("garbage")
    after = scrape(flow)
    rule = "/api/v1/data"
    assert value(after, "cdeg_http_requests_total", route=rule, method="GET", status="200") \
        == value(before, "cdeg_http_requests_total", route=rule, method="GET", status="200") + 1
    assert value(after, "cdeg_http_requests_total", route=rule, method="GET", status="401") >= 1
    assert value(after, "cdeg_http_request_seconds_count", route=rule) >= 2
    assert value(after, "cdeg_tokens_minted_total", kind="access") \
        == value(before, "cdeg_tokens_minted_total", kind="access") + 1
    assert value(after, "cdeg_releases_total", item="identity.hkid", route="api") \
        == value(before, "cdeg_releases_total", item="identity.hkid", route="api") + 1
    assert value(after, "cdeg_connector_calls_total", source="immd", outcome="ok") \
        > value(before, "cdeg_connector_calls_total", source="immd", outcome="ok")
    assert value(after, "cdeg_consents", status="approved") >= 1
    assert ("cdeg_jobs_failed", ()) in after
    text = flow.requester.get("/metrics").get_data(as_text=True)
    assert tokens["consent_id"] not in text and "A123456" not in text   # routes, never URLs


def test_with_a_token_set_a_scrape_must_show_it_and_outside_demo_it_must_be_set(flow):
    gw = flow.gw
    demo = gw.config
    try:
        gw.config = demo.with_(metrics_token="s3cret-scrape-token")
        assert flow.requester.get("/metrics").status_code == 401
        assert flow.requester.get("/metrics", headers={
            "Authorization": "Bearer wrong"}).status_code == 401
        assert flow.requester.get("/metrics", headers={
            "Authorization": "Bearer s3cret-scrape-token"}).status_code == 200
        gw.config = demo.with_(env="production")
        resp = flow.requester.get("/metrics")
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    finally:
        gw.config = demo


def test_under_two_gunicorn_workers_the_counts_are_summed(tmp_path, pg_seeded_schema,
                                                          redis_prefix):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = dict(os.environ, CDEG_DATABASE_URL=pg_seeded_schema, CDEG_REDIS_URL=REDIS_URL,
               CDEG_REDIS_PREFIX=redis_prefix, CDEG_INSTANCE_DIR=str(tmp_path / "instance"),
               CDEG_ISSUER=f"http://127.0.0.1:{port}", CDEG_ENV="test",
               PROMETHEUS_MULTIPROC_DIR=str(shared), CDEG_DATA_KEY=TEST_DATA_KEY)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b",
                               f"127.0.0.1:{port}", "-c", "python:gateway.gunicorn_conf",
                               "gateway.wsgi:app"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        # one worker held by a request that is still arriving; the others go to the second
        held = socket.create_connection(("127.0.0.1", port))
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        for _ in range(20):
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
        held.sendall(b"Connection: close\r\n\r\n")
        assert b" 200 " in held.recv(4096)
        held.close()
        found = samples(requests.get(base + "/metrics", timeout=5).text)
        total = value(found, "cdeg_http_requests_total", route="/healthz", method="GET",
                      status="200")
        assert total >= 22, total                 # the 21 and the readiness polls, all workers
        pids = {int(m) for m in re.findall(r"_(\d+)\.db", " ".join(os.listdir(shared)))}
        assert len(pids) == 2, os.listdir(shared)     # two workers wrote their counts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
