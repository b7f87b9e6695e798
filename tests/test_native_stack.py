"""The deployed topology, proven natively (no container engine runs here): the gateway under
gunicorn with two workers, two ``cdeg worker`` processes, the mock departments as their own
gunicorn service, on the local PostgreSQL and Redis — the whole demo story played through them
over HTTP (the bank's CDI query run by the real workers), ``/metrics`` moving, and a signing key
rotated in the middle of a stream of reads with not one of them failing."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.servers import Gunicorn, free_port
from gateway.demo.agent import Citizen, Requester
from gateway.demo.seed import private_jwks
from gateway.demo.story import play_against

from .conftest import REDIS_URL

BANK = "bank-of-example"


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def released(base: str, route: str) -> float:
    text = requests.get(base + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "cdeg_releases_total" and s.labels.get("route") == route)


def ongoing_token(base: str) -> str:
    bank = Requester(base, BANK, private_jwks(BANK), "http://127.0.0.1:9100/callback")
    detail = {"type": "cdeg_data", "purpose": "ekyc-account-opening", "access": "ongoing",
              "duration": "P30D", "data_items": ["identity.name_en", "identity.hkid",
                                                 "identity.date_of_birth", "address.residential"]}
    resp, verifier = bank.push(detail)
    citizen = Citizen(base, "A123456(3)")
    answer = citizen.decide(citizen.open(bank.authorize_url(resp.json()["request_uri"])),
                            "approve")
    return bank.token(answer["code"], verifier).json()["access_token"]


def test_the_demo_runs_through_gunicorn_workers_and_departments_as_deployed(
        tmp_path, pg_schema, redis_prefix):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = dict(os.environ, CDEG_DATABASE_URL=pg_schema, CDEG_REDIS_URL=REDIS_URL,
               CDEG_REDIS_PREFIX=redis_prefix, CDEG_INSTANCE_DIR=str(tmp_path / "instance"),
               CDEG_ISSUER=base, CDEG_ENV="test", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
               CDEG_JOB_RELAY_EVERY="1")
    cli(env, "db", "upgrade")
    cli(env, "seed", "--demo")
    departments = Gunicorn("departments", "connectors.mock.departments:create_app()",
                           free_port(), tmp_path / "departments.log", env=env, workers=1,
                           extra_args=("-k", "gthread", "--threads", "4"))
    gateway = Gunicorn("gateway", "gateway.wsgi:app", port, tmp_path / "gateway.log",
                       env={**env, "CDEG_DEPARTMENTS_URL": departments.url}, workers=2,
                       extra_args=("-c", "python:gateway.gunicorn_conf"))
    workers = []
    try:
        departments.start()
        departments.wait_ready("/healthz")
        gateway.start()
        gateway.wait_ready("/readyz")
        for i in range(2):
            log = open(tmp_path / f"worker-{i}.log", "wb")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "worker"], stdout=log,
                stderr=subprocess.STDOUT, env={**env, "CDEG_DEPARTMENTS_URL": departments.url}))
        said: list[str] = []
        assert play_against(base, said.append) == 0, "\n".join(said) + gateway.log_tail()
        assert any("through the CDI bridge" in line for line in said)
        assert released(base, "cdi") >= 4 and released(base, "api") >= 5   # summed, 2 workers

        # the key rotation drill: reads never stop while `cdeg keys rotate` runs
        old_token = ongoing_token(base)
        statuses: list[int] = []
        stop = threading.Event()

        def read_on():
            http = requests.Session()
            while not stop.is_set():
                statuses.append(http.get(base + "/api/v1/data", timeout=10, headers={
                    "Authorization": f"Bearer {old_token}"}).status_code)

        readers = [threading.Thread(target=read_on) for _ in range(2)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)
        assert "new signing key" in cli(env, "keys", "rotate")
        time.sleep(1.5)                     # the workers notice within a second
        new_token = ongoing_token(base)
        time.sleep(0.5)
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        import jwt as pyjwt
        assert pyjwt.get_unverified_header(new_token)["kid"] != \
            pyjwt.get_unverified_header(old_token)["kid"]
        assert requests.get(base + "/api/v1/data", timeout=10, headers={
            "Authorization": f"Bearer {new_token}"}).status_code == 200
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
        gateway.stop()
        departments.stop()
