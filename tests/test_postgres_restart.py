"""PostgreSQL crashes and restarts under load: while it is down every answer is 503 in the
edge's own shape (problem+json with Retry-After on the data API, never a 500, never the
driver's words), the gateway recovers by itself when it is back (no restart, the pool throws
its dead connections away), and nothing committed is lost: every data call answered 200 has its
``data.released`` entry, in order, approved consents are still approved, a decision or a token
exchange tried while it was down left nothing half-done, and the audit log verifies.

Uses a private PostgreSQL cluster of its own (initdb + pg_ctl on a free port, trust auth,
fsync on), stopped with ``pg_ctl stop -m immediate`` — a crash: no checkpoint, the backends
killed, recovery from the WAL at the next start — like ``test_redis_down.py`` kills its
private redis-server. initdb refuses to run as root: as root the cluster runs as the
``postgres`` user (``runuser``), and the test fails, never skips, when that is not possible.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from sqlalchemy import func, literal, select, text

from gateway.errors import DatabaseUnavailable
from gateway.store.db import audit_entries, authorization_codes, consents, pushed_requests, tokens
from gateway.store.prepared import compiled

from .conftest import ISSUER, REDIS_URL, build_app, make_config
from .flow import BANK_DETAIL, Flow

THREADS = 8
ITEMS = BANK_DETAIL["data_items"]
# every non-empty subset of the consented items: call k of a thread asks for SUBSETS[k % 15],
# so the entries a consent has, in the order they were written, name the calls they record
SUBSETS = [sorted(c) for n in range(1, len(ITEMS) + 1) for c in itertools.combinations(ITEMS, n)]
# words of the driver, the engine or the host that must never reach a response body
DRIVER_WORDS = ("psycopg", "sqlalchemy", "operationalerror", "connection refused",
                "server closed", "terminating connection", "connection to server", "127.0.0.1",
                "postgres", "traceback", "sqlstate", "(background on this error")
DEADLINE = 20.0        # seconds any wait of this test may take before it fails


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path:
    def version(path: str) -> tuple:
        return tuple(int(p) for p in re.findall(r"\d+", path.split("/")[4])) or (0,)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    pytest.fail("PostgreSQL's initdb and pg_ctl must be installed (/usr/lib/postgresql/*/bin) "
                "for the PostgreSQL restart test")


class PrivatePostgres:
    """A throw-away cluster: initdb into a temporary folder, served on a free port of
    127.0.0.1 only (its socket in that folder), trust auth, fsync and synchronous commit on."""

    def __init__(self):
        self.bindir = _pg_bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cdeg-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:     # initdb and postgres refuse root: run them as postgres
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root, and there is no 'postgres' user to run a "
                            "private PostgreSQL cluster as")
            runuser = shutil.which("runuser")
            if not runuser:
                pytest.fail("running as root, and runuser (util-linux) is missing: cannot run "
                            "initdb as the postgres user")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = [runuser, "-u", "postgres", "--"]

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bindir / tool), *args]
        try:
            done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True,
                                  timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{tool} did not finish in 60 s\n{self._log_tail()}")
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}"
                        f"{done.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "postgres.log:\n" + "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")      # initdb's own files; the running server fsyncs (below)
        self.start()
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SHOW fsync").fetchone()[0] == "on"
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"

    def new_database(self) -> str:
        name = f"cdeg_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=on "
                   f"-c synchronous_commit=on -c full_page_writes=on -c max_connections=60")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "30", "start")

    def crash(self) -> None:
        """pg_ctl stop -m immediate: the postmaster kills every backend at once (SIGQUIT),
        no shutdown checkpoint; the next start recovers from the WAL."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")

    def running(self) -> bool:
        """pg_ctl status: 0 while a postmaster runs on the folder, 3 when none does."""
        if not self.data.exists():
            return False
        return subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                               "status"], cwd=self.root, capture_output=True,
                              timeout=30).returncode == 0

    def destroy(self) -> None:
        try:
            if self.running():
                subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D",
                                str(self.data), "-m", "immediate", "-w", "-t", "30", "stop"],
                               cwd=self.root, capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg():
    """One cluster for the module's tests (initdb costs a second or two); each test gets a
    database of its own on it (``pg_app``) and finds it running."""
    cluster = PrivatePostgres()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()       # always: even when init or a test failed


@pytest.fixture
def pg_app(tmp_path, request, private_pg, redis_prefix):
    """A gateway on a fresh database of the private cluster (migrated and seeded by
    build_app, as on any fresh PostgreSQL) and on the real Redis under a fresh key prefix
    (cleaned by redis_prefix)."""
    if not private_pg.running():      # a test before this one failed while it was down
        private_pg.start()
    config = make_config(tmp_path, "embedded", request,
                         database_url=private_pg.url(private_pg.new_database()),
                         redis_url=REDIS_URL, redis_prefix=redis_prefix, jobs_inline=True)
    app = build_app(config)
    try:
        yield app
    finally:
        app.extensions["cdeg"].close()


@dataclass
class Call:
    k: int
    items: list
    started: float
    ended: float
    status: int
    headers: dict
    body: bytes


class Caller(threading.Thread):
    """One requester back end calling GET /api/v1/data with its own token as fast as it is
    answered, asking for SUBSETS[k % 15] on its k-th call; every answer is kept."""

    def __init__(self, app, access_token: str, stop: threading.Event):
        super().__init__(daemon=True, name="cdeg-caller")
        self.app, self.token, self.stop = app, access_token, stop
        self.calls: list[Call] = []
        self.crashed: BaseException | None = None

    def run(self) -> None:
        client = self.app.test_client()
        try:
            for k in itertools.count():
                if self.stop.is_set():
                    return
                items = SUBSETS[k % len(SUBSETS)]
                started = time.monotonic()
                resp = client.get("/api/v1/data?" + urlencode({"items": ",".join(items)}),
                                  headers={"Authorization": f"Bearer {self.token}",
                                           "Accept": "application/json"})
                self.calls.append(Call(k, items, started, time.monotonic(), resp.status_code,
                                       dict(resp.headers), resp.get_data()))
                if resp.status_code != 200:
                    time.sleep(0.002)   # refusals come back in a millisecond: do not spin
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.crashed = exc

    def since(self, moment: float) -> list[Call]:
        return [c for c in list(self.calls) if c.started >= moment]


def _wait(what: str, condition, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline} s waiting for {what}")
        time.sleep(0.01)


def _show(call: Call) -> str:
    return (f"call {call.k} -> {call.status} {call.headers.get('Content-Type')} "
            f"Retry-After={call.headers.get('Retry-After')!r} {call.body[:300]!r}")


def _no_driver_words(body: bytes, port: int) -> list[str]:
    text = body.decode("utf-8", "replace").lower()
    return [w for w in (*DRIVER_WORDS, str(port)) if w in text]


def _check_unavailable_problem(call: Call, port: int) -> None:
    """The data API's 503 for a database that does not answer (SPEC 8, gateway/errors.py)."""
    assert call.status == 503, "not the database's 503: " + _show(call)
    assert call.headers.get("Content-Type", "").startswith("application/problem+json"), _show(call)
    assert int(call.headers.get("Retry-After", "0")) >= 1, _show(call)
    body = json.loads(call.body)
    assert body == {"type": f"{ISSUER}/problems/unavailable", "title": "Service Unavailable",
                    "status": 503, "detail": DatabaseUnavailable.default_detail}, _show(call)
    assert not _no_driver_words(call.body, port), _show(call)


def _fill_pool(gw, size: int = 5) -> None:
    """Five connections open at once, then all back in the engine's pool, idle (pool_size is
    5); and one idle in the data path's own pool (``gateway/store/prepared.py``)."""
    with contextlib.ExitStack() as stack:
        for conn in [stack.enter_context(gw.db.connect()) for _ in range(size)]:
            conn.execute(text("SELECT 1"))
    assert gw.db.pool.checkedin() == size
    assert gw.prepared.one(compiled(select(literal(1))), {}) == (1,)
    assert gw.prepared.idle() == 1


def _as_call(k: int, items: list, resp) -> Call:
    return Call(k, items, 0.0, 0.0, resp.status_code, dict(resp.headers), resp.get_data())


def _grant(flow: Flow) -> tuple[str, str]:
    """A pushed request approved by the (signed-in) citizen: its code and PKCE verifier."""
    resp = flow.par()
    assert resp.status_code == 201, resp.get_json()
    answer = flow.decide(resp.get_json()["request_uri"])
    assert answer.status_code == 303, answer.get_data(as_text=True)
    return flow.query(answer)["code"], flow.verifier


def _access_token(flow: Flow) -> tuple[str, str]:
    code, verifier = _grant(flow)
    resp = flow.token(code, verifier)
    assert resp.status_code == 200, resp.get_json()
    token = resp.get_json()["access_token"]
    return token, flow.gw.access_tokens.verify(token)["consent_id"]


def _unexchanged_code_consent(gw) -> str:
    """The consent of the one authorization code not exchanged yet."""
    with gw.db.connect() as conn:
        return conn.execute(select(authorization_codes.c.consent_id)
                            .where(authorization_codes.c.used_at.is_(None))).scalar_one()


def _events(gw, consent_id: str) -> list[str]:
    with gw.db.connect() as conn:
        return list(conn.execute(select(audit_entries.c.event)
                                 .where(audit_entries.c.consent_id == consent_id)
                                 .order_by(audit_entries.c.id)).scalars())


def _released_items(gw, consent_id: str) -> list[list[str]]:
    with gw.db.connect() as conn:
        rows = conn.execute(select(audit_entries.c.entry)
                            .where(audit_entries.c.consent_id == consent_id,
                                   audit_entries.c.event == "data.released")
                            .order_by(audit_entries.c.id)).scalars()
        return [sorted(json.loads(r)["items"]) for r in rows]


def _is_subsequence(part: list, whole: list) -> bool:
    rest = iter(whole)
    return all(any(x == y for y in rest) for x in part)


def test_postgres_crash_under_load_is_503_recovers_and_loses_nothing_committed(pg_app,
                                                                               private_pg):
    """Eight requesters call the data API in threads; PostgreSQL crashes under them and comes
    back. Every answer is kept and checked: 200 or the database's 503, 503 all the while it is
    down, 200 again at once when it is back, and every 200 has its entry in the log."""
    app, gw, port = pg_app, pg_app.extensions["cdeg"], private_pg.port
    flow = Flow(app)
    assert flow.login().status_code == 303

    # -- before the crash: tokens for the callers, and three things to try while it is down --
    granted = [_access_token(flow) for _ in range(THREADS)]
    revocable_token, revocable = _access_token(flow)              # revoked while down
    pending_code, pending_verifier = _grant(flow)                 # exchanged while down
    exchanged = _unexchanged_code_consent(gw)
    pushed = flow.par()                                           # approved while down
    assert pushed.status_code == 201
    request_uri = pushed.get_json()["request_uri"]
    page = flow.consent_page(request_uri)
    assert page.status_code == 200
    csrf = flow.csrf(page.get_data(as_text=True))                 # the session's token
    with gw.db.connect() as conn:
        undecided = conn.execute(select(pushed_requests.c.consent_id).where(
            pushed_requests.c.request_uri == request_uri)).scalar_one()
    approved_before = [c for _, c in granted] + [revocable, exchanged]

    stop = threading.Event()
    callers = [Caller(app, token, stop) for token, _ in granted]
    try:
        for caller in callers:
            caller.start()
        _wait("10 answered calls from every caller before the crash",
              lambda: all(sum(c.status == 200 for c in list(x.calls)) >= 10 for x in callers))

        # -- the crash -----------------------------------------------------------------------
        crash_started = time.monotonic()
        private_pg.crash()
        down = time.monotonic()
        _wait("3 calls from every caller while PostgreSQL is down",
              lambda: all(len(x.since(down)) >= 3 for x in callers))

        # a decision, a revocation, a code exchange and the readiness probe while it is down
        # (checked below, after the data calls)
        tried_while_down = {
            "the consent approval": flow.browser.post("/oauth/authorize", data={
                "csrf_token": csrf, "client_id": flow.client_id, "request_uri": request_uri,
                "decision": "approve"}),
            "the revocation on /me": flow.browser.post(f"/me/consents/{revocable}/revoke",
                                                       data={"csrf_token": csrf}),
            "the code exchange": flow.token(pending_code, pending_verifier),
            "/readyz": flow.requester.get("/readyz"),
            "/healthz": flow.requester.get("/healthz"),
        }
        time.sleep(0.3)      # the callers keep calling a database that is not there

        # -- back: no gateway restart ----------------------------------------------------------
        restart = time.monotonic()
        private_pg.start()
        up = time.monotonic()
        _wait("every caller answered 200 again after PostgreSQL restarted",
              lambda: all(any(c.status == 200 for c in x.since(up)) for x in callers), 10.0)
        _wait("3 more answered calls from every caller",
              lambda: all(sum(c.status == 200 for c in x.since(up)) >= 3 for x in callers))
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=DEADLINE)
    assert not any(c.is_alive() for c in callers), "a data call hung"
    assert not [c.crashed for c in callers if c.crashed], [c.crashed for c in callers]

    # -- 1. every answer was 200 or the database's 503; never a 500 ---------------------------
    for caller in callers:
        others = [_show(c) for c in caller.calls if c.status not in (200, 503)]
        assert not others, ("data calls answered other than 200 or 503 (PostgreSQL crashed "
                            "and restarted meanwhile):\n" + "\n".join(others[:10]))
        before = [c for c in caller.calls if c.ended < crash_started]
        assert before and all(c.status == 200 for c in before), \
            [_show(c) for c in before if c.status != 200][:5]
        for call in caller.calls:
            if call.status == 503:
                _check_unavailable_problem(call, port)
            else:
                body = json.loads(call.body)
                assert sorted(body["items"]) == call.items, _show(call)

    # -- 2. while it was down: 503 --------------------------------------------------------------
    for caller in callers:
        while_down = [c for c in caller.calls if c.started >= down and c.ended <= restart]
        assert len(while_down) >= 3 and all(c.status == 503 for c in while_down), \
            [_show(c) for c in while_down if c.status != 503][:5]

    # -- 3. recovered by itself, at the first call once it was back, and stayed recovered ----
    for caller in callers:
        after = caller.since(up)
        first_ok = next(i for i, c in enumerate(after) if c.status == 200)
        assert first_ok <= 1, ("calls refused after PostgreSQL was back: "
                               + "; ".join(_show(c) for c in after[:first_ok]))
        assert all(c.status == 200 for c in after[first_ok:]), \
            [_show(c) for c in after[first_ok:] if c.status != 200][:5]

    # -- 4. nothing committed was lost -----------------------------------------------------------
    in_doubt = 0
    for caller, (_, consent_id) in zip(callers, granted):
        recorded = _released_items(gw, consent_id)
        answered = [c.items for c in caller.calls if c.status == 200]
        # the refusals between the last 200 before the crash and the first after it; of those,
        # only a call already running when the crash began can have committed (its answer
        # lost with its connection): its entry may be there, no other's
        refused_at = next(i for i, c in enumerate(caller.calls) if c.status != 200)
        back_at = max(i for i, c in enumerate(caller.calls) if c.status != 200) + 1
        assert all(c.status == 503 for c in caller.calls[refused_at:back_at])
        pre = [c.items for c in caller.calls[:refused_at]]
        post = [c.items for c in caller.calls[back_at:]]
        maybe = [c.items for c in caller.calls[refused_at:back_at] if c.started < down]
        assert len(recorded) >= len(answered), (
            f"consent {consent_id}: {len(answered)} calls answered 200 but only "
            f"{len(recorded)} data.released entries survived the crash (a 200 sent before its "
            f"commit was durable?)")
        middle = recorded[len(pre):len(recorded) - len(post)]
        assert recorded[:len(pre)] == pre and recorded[len(recorded) - len(post):] == post \
            and _is_subsequence(middle, maybe), (
                f"consent {consent_id}: entries {recorded} do not match the calls answered 200 "
                f"({pre} before the crash, {post} after) with at most the calls in flight at "
                f"the crash ({maybe}) between them")
        in_doubt += len(middle)

    # -- a decision, a revocation and a code exchange while it was down: 503, in their shapes -
    for what, resp in tried_while_down.items():
        expected = 200 if what == "/healthz" else 503
        assert resp.status_code == expected, (
            f"{what} while PostgreSQL was down answered {resp.status_code}, not {expected}: "
            f"{resp.get_data(as_text=True)[:300]}")
        assert not _no_driver_words(resp.get_data(), port), \
            f"{what}: driver words in the body: {resp.get_data(as_text=True)[:300]}"
        if expected == 503:
            assert int(resp.headers.get("Retry-After", "0")) >= 1, f"{what}: no Retry-After"
    for what in ("the consent approval", "the revocation on /me"):
        assert tried_while_down[what].mimetype == "text/html"      # the citizen's page
    assert tried_while_down["the code exchange"].get_json()["error"] == \
        "temporarily_unavailable"                                   # RFC 6749 5.2 shape

    with gw.db.connect() as conn:
        statuses = dict(conn.execute(select(consents.c.consent_id, consents.c.status)
                                     .where(consents.c.consent_id.in_(
                                         approved_before + [undecided]))).all())
        revoked_tokens = conn.execute(select(func.count()).select_from(tokens).where(
            tokens.c.consent_id.in_(approved_before), tokens.c.revoked_at.is_not(None))).scalar()
        undecided_codes = conn.execute(select(func.count()).select_from(authorization_codes)
                                       .where(authorization_codes.c.consent_id == undecided)
                                       ).scalar()
        pushed_used = conn.execute(select(pushed_requests.c.used_at).where(
            pushed_requests.c.request_uri == request_uri)).scalar_one()
        code_used = conn.execute(select(authorization_codes.c.used_at).where(
            authorization_codes.c.consent_id == exchanged)).scalar_one()
        exchanged_tokens = conn.execute(select(func.count()).select_from(tokens)
                                        .where(tokens.c.consent_id == exchanged)).scalar()
    assert {c: statuses[c] for c in approved_before} == {c: "approved" for c in approved_before}
    assert revoked_tokens == 0

    # the decision, revocation and exchange tried while it was down left nothing behind ...
    assert statuses[undecided] == "requested" and pushed_used is None and undecided_codes == 0
    assert _events(gw, undecided) == ["consent.requested"]
    assert "consent.revoked" not in _events(gw, revocable)
    assert code_used is None and exchanged_tokens == 0
    # ... and each can be done now, once
    assert flow.data(revocable_token).status_code == 200
    approval = flow.browser.post("/oauth/authorize", data={
        "csrf_token": csrf, "client_id": flow.client_id, "request_uri": request_uri,
        "decision": "approve"})
    assert approval.status_code == 303 and "code" in flow.query(approval)
    assert _events(gw, undecided) == ["consent.requested", "consent.approved"]
    assert flow.token(pending_code, pending_verifier).status_code == 200
    revocation = flow.browser.post(f"/me/consents/{revocable}/revoke", data={"csrf_token": csrf})
    assert revocation.status_code == 303
    assert _events(gw, revocable).count("consent.revoked") == 1
    assert flow.data(revocable_token).status_code == 401
    assert flow.requester.get("/readyz").status_code == 200

    # -- the log: every entry sequenced, every tree and the checkpoint hold (cdeg audit verify) -
    from gateway.audit import sequencer
    sequencer.integrate_all(gw)
    with gw.db.connect() as conn:
        total = conn.execute(select(func.count()).select_from(audit_entries)).scalar()
    env = {**os.environ, "CDEG_ENV": "test", "CDEG_INSTANCE_DIR": str(gw.config.instance_dir),
           "CDEG_DATA_KEY": gw.config.data_key or "",
           "CDEG_ISSUER": ISSUER, "CDEG_DATABASE_URL": gw.config.database_url,
           "CDEG_JOBS_INLINE": "1"}
    env.pop("CDEG_REDIS_URL", None)
    verified = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()",
                               "audit", "verify"], env=env, capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"audit log intact: {total} entries sequenced" in verified.stdout, verified.stdout
    assert ", 0 waiting" in verified.stdout, verified.stdout
    print(f"calls: {sum(len(c.calls) for c in callers)}, 200: "
          f"{sum(c.status == 200 for x in callers for c in x.calls)}, 503: "
          f"{sum(c.status == 503 for x in callers for c in x.calls)}, committed but answered "
          f"503 (in flight at the crash): {in_doubt}, down for {restart - down:.2f} s")


def test_a_restart_while_idle_costs_at_most_one_refused_call(pg_app, private_pg):
    """PostgreSQL restarted between two calls (no pre-ping, by choice: a round trip a
    checkout): every pooled connection is dead, the first call that meets one answers 503, and
    the whole pool is thrown away with it, so the next call works; nothing refused committed."""
    app, gw, port = pg_app, pg_app.extensions["cdeg"], private_pg.port
    flow = Flow(app)
    assert flow.login().status_code == 303
    token, consent_id = _access_token(flow)
    _fill_pool(gw)
    assert flow.data(token, ",".join(SUBSETS[0])).status_code == 200

    private_pg.crash()
    private_pg.start()
    answers = [_as_call(k, SUBSETS[k % len(SUBSETS)],
                        flow.data(token, ",".join(SUBSETS[k % len(SUBSETS)])))
               for k in range(1, 9)]
    refused = [c for c in answers if c.status != 200]
    assert len(refused) <= 1 and all(c.status == 200 for c in answers[len(refused):]), (
        "after a restart while idle, more than the first call was refused (dead pooled "
        "connections used one by one? a token lost in the crash?):\n"
        + "\n".join(_show(c) for c in answers))
    for call in refused:
        _check_unavailable_problem(call, port)
    print(f"after the idle restart: {len(refused)} call refused, then "
          f"{len(answers) - len(refused)} answered")
    recorded = _released_items(gw, consent_id)
    answered = [SUBSETS[0]] + [c.items for c in answers if c.status == 200]
    assert recorded == answered, (
        f"the data.released entries {recorded} are not exactly the calls answered 200 "
        f"{answered}: a commit lost in the crash, or a refused call that wrote")


def test_writes_meeting_a_dead_pooled_connection_while_down_answer_503(pg_app, private_pg):
    """PostgreSQL crashed while the pool was full of idle connections, and is still down: the
    first statement of a write meets a dead connection (no pre-ping), and the reconnect the
    gateway may try after it is refused too. An approval, a revocation, a code exchange and a
    data call each answer 503 in their shapes, each in a crash of its own (the first dead
    connection met throws the pool away), and none of them left anything behind."""
    app, gw, port = pg_app, pg_app.extensions["cdeg"], private_pg.port
    flow = Flow(app)
    assert flow.login().status_code == 303
    token, revocable = _access_token(flow)
    code, verifier = _grant(flow)
    exchanged = _unexchanged_code_consent(gw)
    pushed = flow.par()
    assert pushed.status_code == 201
    request_uri = pushed.get_json()["request_uri"]
    page = flow.consent_page(request_uri)
    assert page.status_code == 200
    csrf = flow.csrf(page.get_data(as_text=True))
    with gw.db.connect() as conn:
        undecided = conn.execute(select(pushed_requests.c.consent_id).where(
            pushed_requests.c.request_uri == request_uri)).scalar_one()
    released_before = len(_released_items(gw, revocable))

    tries = {
        "the consent approval": lambda: flow.browser.post("/oauth/authorize", data={
            "csrf_token": csrf, "client_id": flow.client_id, "request_uri": request_uri,
            "decision": "approve"}),
        "the revocation on /me": lambda: flow.browser.post(f"/me/consents/{revocable}/revoke",
                                                           data={"csrf_token": csrf}),
        "the code exchange": lambda: flow.token(code, verifier),
        "the data call": lambda: flow.data(token),
    }
    answers = {}
    for what, attempt in tries.items():
        _fill_pool(gw)
        private_pg.crash()
        try:
            answers[what] = attempt()
        finally:
            private_pg.start()
    for what, resp in answers.items():
        assert resp.status_code == 503, (
            f"{what}, on a dead pooled connection while PostgreSQL was down, answered "
            f"{resp.status_code}, not 503: {resp.get_data(as_text=True)[:300]}")
        assert int(resp.headers.get("Retry-After", "0")) >= 1, f"{what}: no Retry-After"
        assert not _no_driver_words(resp.get_data(), port), \
            f"{what}: driver words in the body: {resp.get_data(as_text=True)[:300]}"
    assert answers["the data call"].mimetype == "application/problem+json"
    assert answers["the code exchange"].get_json()["error"] == "temporarily_unavailable"

    # nothing half-done ...
    with gw.db.connect() as conn:
        statuses = dict(conn.execute(select(consents.c.consent_id, consents.c.status).where(
            consents.c.consent_id.in_([revocable, undecided, exchanged]))).all())
        code_used = conn.execute(select(authorization_codes.c.used_at).where(
            authorization_codes.c.consent_id == exchanged)).scalar_one()
        exchanged_tokens = conn.execute(select(func.count()).select_from(tokens)
                                        .where(tokens.c.consent_id == exchanged)).scalar()
    assert statuses == {revocable: "approved", undecided: "requested", exchanged: "approved"}
    assert _events(gw, undecided) == ["consent.requested"]
    assert "consent.revoked" not in _events(gw, revocable)
    assert len(_released_items(gw, revocable)) == released_before
    assert code_used is None and exchanged_tokens == 0
    # ... and each goes through now
    assert flow.data(token).status_code == 200
    assert tries["the consent approval"]().status_code == 303
    assert tries["the code exchange"]().status_code == 200
    assert tries["the revocation on /me"]().status_code == 303
    assert flow.data(token).status_code == 401
