"""CDI queries survive a worker killed with SIGKILL (SPEC 5, ``gateway/jobs/cdi_query.py``): real
``cdeg worker`` processes on the real Redis and PostgreSQL, the departments over HTTP, the
FI's callback receiver over HTTP.

- Killed mid-job (provably: its identity lookup is held open by the departments server when the
  kill lands): another worker takes the query over once the outbox row's lease has ended, and
  the query ends done exactly once — one release key, one ``data.released`` entry (route
  ``cdi``), one sealed result the FI opens, one callback POST, signed by the gateway.
- Killed after the release committed, while it was POSTing the callback to a slow receiver:
  the query is never released twice, even when its job runs again, and the callback is
  delivered by the next worker.

The workers run on the real clock, so the timings they wait on are made short through their
environment (``CDEG_JOB_TIMEOUT``, ``CDEG_JOB_STALE_AFTER``, ``CDEG_JOB_RELAY_EVERY``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from jwcrypto import jwk, jws
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select, update
from werkzeug.serving import make_server

from gateway import requester_registry
from gateway.demo.seed import public_jwks
from gateway.jobs.outbox import job_id
from gateway.store.db import audit_entries, cdi_queries, outbox, release_keys
from gateway.store.queue import queue_for

from .cdi_fi import FIClient
from .conftest import REDIS_URL, build_app, make_config
from .flow import BANK, Flow

ITEMS = ["identity.name_en", "identity.hkid"]
IDENTITY = "/immd/v1/identity"
DEADLINE = 25.0            # seconds any one wait of these tests may take before it fails
QUIET = 3.0                # seconds to listen for a callback that must not come
JOB_TIMEOUT, STALE_AFTER, RELAY_EVERY = 2, 3, 1     # the workers' settings (seconds)


# -- servers of the test's own ------------------------------------------------------------------

class _Served:
    """A test server on its own thread (``server``, ``thread``), holding requests until
    ``release`` is set; stopped (and anything held let go) when the ``with`` block ends."""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class HeldDepartments(_Served):
    """The mock departments (``connectors.mock.departments``) over HTTP, holding the first
    identity lookup open until ``release`` is set: ``held`` is set once it has arrived."""

    def __init__(self):
        from connectors.mock.departments import create_app
        self.app = create_app()
        self.held, self.release = threading.Event(), threading.Event()
        self.lookups: list[str] = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        with self._lock:
            self.lookups.append(path)
            hold = path == IDENTITY and self.lookups.count(IDENTITY) == 1
        if hold:
            self.held.set()
            self.release.wait(DEADLINE)
        return self.app(environ, start_response)

    def identity_lookups(self) -> int:
        with self._lock:
            return self.lookups.count(IDENTITY)



class CallbackReceiver(_Served):
    """The FI's callback endpoint: records every POST (its body and Content-Type) as it
    arrives, answers 200; with ``hold_first`` the first POST is answered only once ``release``
    is set (a slow receiver)."""

    def __init__(self, hold_first: bool = False):
        self.posts: list[dict] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "body": body.decode("ascii"),
                                           "content_type": self.headers.get("Content-Type")})
                    first = len(receiver.posts) == 1
                receiver.arrived.set()
                if first and receiver.hold_first:
                    receiver.release.wait(DEADLINE)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:          # the worker that sent it is gone
                    pass

            def log_message(self, *args):
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/cdi/results"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self) -> int:
        with self.lock:
            return len(self.posts)



# -- workers -------------------------------------------------------------------------------------

class Worker:
    """``python -m gateway.cli worker`` (what ``cdeg worker`` runs) in a process of its own,
    its output kept in a file for the failure messages."""

    def __init__(self, name: str, env: dict, folder: Path):
        self.name = name
        self.log = folder / f"{name}.log"
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "worker"], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=Path(__file__).resolve().parents[1])

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is cleaned up, the socket just closes."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()           # RQ's warm shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-25:]
        except OSError:
            return ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(lines)


def worker_env(config, departments_url: str) -> dict:
    return dict(os.environ, CDEG_DATABASE_URL=config.database_url,
                CDEG_REDIS_URL=config.redis_url, CDEG_REDIS_PREFIX=config.redis_prefix,
                CDEG_INSTANCE_DIR=str(config.instance_dir), CDEG_ISSUER=config.issuer,
                CDEG_DATA_KEY=config.data_key,
                CDEG_DEPARTMENTS_URL=departments_url, CDEG_ENV="test",
                CDEG_JOB_TIMEOUT=str(JOB_TIMEOUT), CDEG_JOB_STALE_AFTER=str(STALE_AFTER),
                CDEG_JOB_RELAY_EVERY=str(RELAY_EVERY))


def wait_for(what: str, check, workers=(), deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline:.0f} s\n"
                        + "\n".join(w.tail() for w in workers))
        time.sleep(0.05)


# -- the gateway and its ledger -------------------------------------------------------------------

@pytest.fixture
def queued_app(tmp_path, request, clock):
    """The gateway on PostgreSQL + the real Redis, its jobs handed to RQ (not inline)."""
    config = make_config(tmp_path, "services", request, jobs_inline=False)
    app = build_app(config, clock)
    gw = app.extensions["cdeg"]
    yield app
    try:
        with gw.db.connect() as conn:
            ids = conn.execute(select(outbox.c.id)).scalars().all()
        queue = queue_for(gw)
        client = redis.Redis.from_url(REDIS_URL)
        # RQ keeps its jobs outside our prefix (under ids that carry it: outbox.job_id): remove
        # this run's, and only those its queue last enqueued
        for outbox_id in ids:
            try:
                job = Job.fetch(job_id(gw, outbox_id), connection=client)
            except NoSuchJobError:
                continue
            if job.origin == queue.name:
                job.delete()
        queue.delete(delete_jobs=True)
    finally:
        gw.close()


def register_callback(gw, url: str) -> None:
    """bank-of-example again, its keys and policy as seeded, with ``url`` as its one callback."""
    with gw.transaction() as conn:
        bank = requester_registry.get(conn, BANK)
        requester_registry.register(conn, gw.clock.now(), client_id=BANK, name=bank["name"],
                                    name_zh=bank["name_zh"], kind="fi", jwks=public_jwks(BANK),
                                    redirect_uris=bank["redirect_uris"], policy=bank["policy"],
                                    callback_urls=[url], demo=True)


def released_entries(gw, consent_id: str) -> list[dict]:
    with gw.db.connect() as conn:
        rows = conn.execute(select(audit_entries.c.entry)
                            .where(audit_entries.c.event == "data.released",
                                   audit_entries.c.consent_id == consent_id)).scalars().all()
    return [json.loads(row) for row in rows]


def release_keys_of(gw, consent_id: str) -> list[str]:
    with gw.db.connect() as conn:
        return conn.execute(select(release_keys.c.key)
                            .where(release_keys.c.consent_id == consent_id)).scalars().all()


def query_row(gw, query_id: str):
    with gw.db.connect() as conn:
        return conn.execute(select(cdi_queries).where(cdi_queries.c.query_id == query_id)).first()


def job_row(gw, query_id: str):
    row = query_row(gw, query_id)
    with gw.db.connect() as conn:
        return conn.execute(select(outbox).where(
            outbox.c.idempotency_key == f"cdi.run_query:{row.id}")).first()


def status_of(fi: FIClient, query_id: str) -> dict:
    resp = fi.poll(query_id)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def verified_callback(app, post: dict) -> tuple[dict, dict]:
    """(header, claims) of a callback body: a compact JWS the gateway signed with a key of its
    /jwks.json."""
    keys = jwk.JWKSet.from_json(app.test_client().get("/jwks.json").get_data(as_text=True))
    token = jws.JWS()
    token.deserialize(post["body"])
    token.verify(keys.get_key(token.jose_header["kid"]), alg="ES256")
    return token.jose_header, json.loads(token.payload)


def submit(fi: FIClient, access_token: str, query_id: str, callback_url: str) -> None:
    resp = fi.submit(fi.message(access_token, ITEMS, query_id=query_id, callback_url=callback_url))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"query_id": query_id, "status": "queued"}


# -- the tests -------------------------------------------------------------------------------------

def test_a_worker_killed_mid_job_leaves_the_query_to_another_done_exactly_once(
        queued_app, tmp_path):
    app = queued_app
    gw = app.extensions["cdeg"]
    config = gw.config
    workers: list[Worker] = []
    with HeldDepartments() as departments, CallbackReceiver() as receiver:
        register_callback(gw, receiver.url)
        flow = Flow(app)
        tokens = flow.tokens()
        fi = FIClient(flow)
        submit(fi, tokens["access_token"], "ekyc-killed-1", receiver.url)
        env = worker_env(config, departments.url)
        try:
            first = Worker("worker-1", env, tmp_path)
            workers.append(first)
            # worker 1 took the job and is inside the fetch: the departments hold its lookup
            wait_for("worker 1 asking the departments for the identity", departments.held.is_set,
                     workers)
            assert status_of(fi, "ekyc-killed-1")["status"] == "running"
            first.kill()
            killed_at = time.monotonic()
            departments.release.set()     # its answer goes to a closed socket
            assert first.proc.returncode == -signal.SIGKILL
            assert released_entries(gw, tokens["consent_id"]) == []      # nothing released
            job = job_row(gw, "ekyc-killed-1")
            assert job.attempts == 1 and job.done_at is None and job.claimed_at is not None

            second = Worker("worker-2", env, tmp_path)
            workers.append(second)
            done = wait_for("the query done by worker 2",
                            lambda: (s := status_of(fi, "ekyc-killed-1"))["status"] == "done"
                            and s, workers)
            took = time.monotonic() - killed_at
            assert "error" not in done
            # its callback: one POST; listen a while longer for a second one that must not come
            wait_for("the callback POST", receiver.arrived.is_set, workers)
            time.sleep(QUIET)
            final = status_of(fi, "ekyc-killed-1")
        finally:
            for worker in workers:
                worker.stop()
        logs = "\n".join(w.tail() for w in workers)

        # the second run fetched again (the first's lookup was held when it died): two lookups
        assert departments.identity_lookups() == 2, logs
        job = job_row(gw, "ekyc-killed-1")
        assert job.attempts == 2 and job.done_at is not None, logs
        assert took < DEADLINE

        # released exactly once: one key, one entry, route cdi, the items asked
        assert release_keys_of(gw, tokens["consent_id"]) == [f"{BANK}:cdi:ekyc-killed-1"], logs
        entries = released_entries(gw, tokens["consent_id"])
        assert len(entries) == 1, (entries, logs)
        assert entries[0]["route"] == "cdi" and sorted(entries[0]["items"]) == sorted(ITEMS)
        assert entries[0]["client_id"] == BANK

        # the result opens: encrypted to the bank, signed by the gateway
        _, claims = fi.open(done["result"])
        assert claims["query_id"] == "ekyc-killed-1" and claims["aud"] == BANK
        assert claims["consent_id"] == tokens["consent_id"]
        assert sorted(claims["items"]) == sorted(ITEMS)
        assert claims["items"]["identity.hkid"]["value"] == "A123456(3)"

        # exactly one callback, signed by the gateway, carrying the same result
        assert receiver.count() == 1, (receiver.posts, logs)
        post = receiver.posts[0]
        assert post["path"] == "/cdi/results" and post["content_type"] == "application/jose"
        header, body = verified_callback(app, post)
        assert header["typ"] == "cdeg-cdi-callback+jwt"
        assert body["iss"] == config.issuer and body["aud"] == BANK
        assert body["query_id"] == "ekyc-killed-1" and body["status"] == "done"
        assert body["result"] == done["result"]
        assert final["callback"] == {"url": receiver.url, "delivery": "delivered", "attempts": 1}


def test_a_worker_killed_while_a_slow_receiver_holds_its_callback_never_releases_twice(
        queued_app, tmp_path):
    app = queued_app
    gw = app.extensions["cdeg"]
    config = gw.config
    workers: list[Worker] = []
    with HeldDepartments() as departments, CallbackReceiver(hold_first=True) as receiver:
        departments.release.set()         # the departments answer at once here
        register_callback(gw, receiver.url)
        flow = Flow(app)
        tokens = flow.tokens()
        fi = FIClient(flow)
        submit(fi, tokens["access_token"], "ekyc-killed-2", receiver.url)
        env = worker_env(config, departments.url)
        try:
            first = Worker("worker-1", env, tmp_path)
            workers.append(first)
            # the release has committed (the callback is due only from that transaction on) and
            # worker 1 is waiting on the receiver, which holds its POST
            wait_for("worker 1's callback POST", receiver.arrived.is_set, workers)
            assert status_of(fi, "ekyc-killed-2")["status"] == "done"
            first.kill()
            receiver.release.set()        # its answer goes to a closed socket
            assert first.proc.returncode == -signal.SIGKILL
            assert len(released_entries(gw, tokens["consent_id"])) == 1
            row = query_row(gw, "ekyc-killed-2")
            assert row.delivery == "pending" and row.delivery_attempts == 0
            lease_end = row.next_delivery_at
            # Worst case for the job: the kill landed between the release's commit and the
            # outbox marking the job done (the row is then exactly this: claimed, not done), so
            # the job is handed on again once stale and runs a second time. The callback's
            # lease (push.lease, 12 s) ends at `lease_end`; the workers run on the real
            # clock, so it is brought forward here instead of waited for.
            with gw.transaction() as conn:
                conn.execute(update(outbox).where(outbox.c.id == job_row(gw, "ekyc-killed-2").id)
                             .values(done_at=None))
                conn.execute(update(cdi_queries).where(cdi_queries.c.id == row.id)
                             .values(next_delivery_at=gw.clock.now()))
            assert lease_end > gw.clock.now() + 5    # without that, no retry for a while yet

            second = Worker("worker-2", env, tmp_path)
            workers.append(second)
            wait_for("the job run again by worker 2",
                     lambda: job_row(gw, "ekyc-killed-2").done_at is not None, workers)
            wait_for("the callback delivered by worker 2",
                     lambda: status_of(fi, "ekyc-killed-2")["callback"]["delivery"]
                     == "delivered", workers)
            time.sleep(QUIET)
            final = status_of(fi, "ekyc-killed-2")
        finally:
            for worker in workers:
                worker.stop()
        logs = "\n".join(w.tail() for w in workers)

        job = job_row(gw, "ekyc-killed-2")
        assert job.attempts == 2, logs                 # the job did run a second time ...
        assert departments.identity_lookups() == 1, logs   # ... and fetched nothing
        assert release_keys_of(gw, tokens["consent_id"]) == [f"{BANK}:cdi:ekyc-killed-2"], logs
        entries = released_entries(gw, tokens["consent_id"])
        assert len(entries) == 1 and entries[0]["route"] == "cdi", (entries, logs)

        # two POSTs: the one the killed worker never heard answered, and worker 2's; the same
        # query and result, each signed by the gateway with a jti of its own
        assert receiver.count() == 2, (receiver.posts, logs)
        bodies = [verified_callback(app, post)[1] for post in receiver.posts]
        assert {b["query_id"] for b in bodies} == {"ekyc-killed-2"}
        assert {b["status"] for b in bodies} == {"done"}
        assert bodies[0]["result"] == bodies[1]["result"] == final["result"]
        assert bodies[0]["jti"] != bodies[1]["jti"]
        _, claims = fi.open(final["result"])
        assert claims["query_id"] == "ekyc-killed-2"
        assert final["callback"] == {"url": receiver.url, "delivery": "delivered", "attempts": 1}
