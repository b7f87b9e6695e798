"""Jobs: asked for inside a transaction (an outbox row), run only once it has committed —
inline in the embedded default, on a real RQ worker with a real Redis — and never lost after
the commit."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from gateway import runtime
from gateway.jobs import outbox
from gateway.jobs.registry import JOBS
from gateway.jobs.sweeps import expire_consents
from gateway.store.db import audit_entries, consents
from gateway.store.db import outbox as outbox_table
from gateway.store.queue import queue_for


def _statuses(gw) -> list[str]:
    with gw.db.connect() as conn:
        return sorted(conn.execute(select(consents.c.status)).scalars())


def _rows(gw) -> list[dict]:
    with gw.db.connect() as conn:
        return [dict(r) for r in conn.execute(select(outbox_table)
                                              .order_by(outbox_table.c.id)).mappings()]


@pytest.fixture
def probe(monkeypatch):
    """A job that records each run (and whether its asking transaction was visible)."""
    runs: list[dict] = []

    def probe_job(gw, **args):
        runs.append(args)
        return len(runs)

    monkeypatch.setitem(JOBS, "test.probe", probe_job)
    return runs


def test_sweep_expires_lapsed_consents_and_unanswered_requests(flow, clock):
    tokens = flow.tokens()           # approved for P90D
    flow.par()                       # requested, never answered
    assert expire_consents(flow.gw) == 0
    clock.advance(91 * 86400)
    assert flow.data(tokens["access_token"]).status_code == 401   # lapsed at once
    assert expire_consents(flow.gw) == 2
    assert _statuses(flow.gw) == ["expired", "expired"]
    with flow.gw.db.connect() as conn:
        events = list(conn.execute(select(audit_entries.c.event)).scalars())
    assert events.count("consent.expired") == 2
    assert expire_consents(flow.gw) == 0    # idempotent


def test_a_job_runs_only_after_the_transaction_that_asked_for_it_commits(gw, probe):
    with gw.transaction() as conn:
        outbox.add(conn, gw.clock.now(), "test.probe", {"consent_id": "cns_x"}, key="k1")
        assert probe == []           # asked for, not run: the transaction is still open
    assert probe == [{"consent_id": "cns_x"}]          # inline, right after the commit
    assert _rows(gw)[0]["done_at"] is not None


def test_a_job_asked_for_in_a_transaction_that_rolls_back_never_runs(gw, probe):
    with pytest.raises(ZeroDivisionError):
        with gw.transaction() as conn:
            outbox.add(conn, gw.clock.now(), "test.probe", {}, key="k-rolled-back")
            1 / 0
    outbox.relay(gw)
    assert probe == [] and _rows(gw) == []


def test_asking_twice_with_one_key_is_one_job(gw, probe):
    for _ in range(2):
        with gw.transaction() as conn:
            outbox.add(conn, gw.clock.now(), "test.probe", {"n": 1}, key="same")
    assert probe == [{"n": 1}] and len(_rows(gw)) == 1


def test_job_arguments_must_be_ids_not_personal_data(gw, probe):
    with gw.transaction() as conn:
        for args in ({"citizen": {"hkid": "A123456(3)"}}, {"flag": True}, {"long": "x" * 500},
                     {"hkid": "A123456(3)"}, {"who": "A1234563"}, {"name": "CHAN Tai Man"}):
            with pytest.raises(outbox.JobRefused):
                outbox.add(conn, 0, "test.probe", args, key="bad")
        with pytest.raises(outbox.JobRefused, match="unknown job"):
            outbox.add(conn, 0, "no.such.job", {}, key="bad")


def test_jobs_are_asked_for_only_inside_a_transaction_whose_commit_relays_them(gw, probe):
    with gw.db.begin() as conn, pytest.raises(outbox.JobRefused, match="transaction"):
        outbox.add(conn, 0, "test.probe", {}, key="outside")
    assert _rows(gw) == []


def test_a_job_whose_run_has_started_is_not_started_again_until_its_lease_ends(gw, probe):
    """Two copies of one RQ job (a relay that failed part-way enqueues again): the second
    finds the first's lease and does nothing."""
    with gw.db.begin() as conn:
        conn.execute(outbox_table.insert().values(job="test.probe", args={}, attempts=1,
                                                  idempotency_key="leased", created_at=0,
                                                  relayed_at=gw.clock.now(),
                                                  claimed_at=gw.clock.now()))
    row_id = _rows(gw)[0]["id"]
    runtime.install(gw)
    try:
        assert outbox.run(row_id) is None and probe == []      # the first run still holds it
        gw.clock.advance(gw.config.job_timeout + 1)
        assert outbox.run(row_id) == 1 and probe == [{}]       # its lease ended: run once
        assert outbox.run(row_id) is None and probe == [{}]    # done: never again
    finally:
        runtime.install(None)


def test_the_sweep_still_runs_from_an_operators_cron_with_no_arguments(flow, clock):
    flow.tokens()
    clock.advance(91 * 86400)
    runtime.install(flow.gw)        # as cdeg worker does
    try:
        assert expire_consents() == 1
    finally:
        runtime.install(None)


def test_a_failing_inline_job_is_tried_again_later_and_then_left_for_an_operator(gw, monkeypatch):
    calls = []

    def failing(gw, **args):
        calls.append(1)
        raise RuntimeError("department down")

    monkeypatch.setitem(JOBS, "test.failing", failing)
    with gw.transaction() as conn:   # committed: the failure does not undo it
        outbox.add(conn, gw.clock.now(), "test.failing", {}, key="f")
    assert len(calls) == 1 and _rows(gw)[0]["done_at"] is None
    for _ in range(10):
        gw.clock.advance(gw.config.job_stale_after + 1)
        outbox.relay(gw)
    assert len(calls) == gw.config.job_attempts and _rows(gw)[0]["done_at"] is None


def test_a_job_is_not_lost_when_the_queue_is_down_at_commit(tmp_path, request, clock, monkeypatch):
    """Real Redis, jobs on RQ: the enqueue after the commit fails; the commit stands, the row
    waits, and the next relay hands it on."""
    from rq import Queue

    from .conftest import build_app, make_config
    app = build_app(make_config(tmp_path, "services", request, jobs_inline=False), clock)
    gw = runtime.of(app)
    try:
        def down(*args, **kwargs):
            from redis.exceptions import ConnectionError
            raise ConnectionError("refused")

        monkeypatch.setattr(Queue, "enqueue", down)
        with gw.transaction() as conn:
            outbox.add(conn, gw.clock.now(), "sweep.expire_consents", {}, key="sweep-1")
        assert _rows(gw)[0]["relayed_at"] is None          # committed, not handed on
        monkeypatch.undo()
        assert outbox.relay(gw) == 1
        assert _rows(gw)[0]["relayed_at"] is not None
        assert [j.args for j in queue_for(gw).jobs] == [(_rows(gw)[0]["id"],)]  # an id only
    finally:
        queue_for(gw).delete(delete_jobs=True)
        gw.close()


def test_worker_runs_the_outbox_job_from_the_real_queue(tmp_path, request, clock):
    from .conftest import build_app, make_config
    from .flow import Flow
    config = make_config(tmp_path, "services", request, jobs_inline=False)
    app = build_app(config, clock)
    gw = runtime.of(app)
    Flow(app).par()
    with gw.transaction() as conn:   # relayed to RQ after the commit
        outbox.add(conn, gw.clock.now(), "sweep.expire_consents", {}, key="sweep-now")
    row = _rows(gw)[0]
    assert row["relayed_at"] is not None and row["done_at"] is None
    job = queue_for(gw).fetch_job(outbox.job_id(gw, row["id"]))
    assert job.args == (row["id"],)  # jobs carry ids, never personal data
    env = dict(os.environ, CDEG_DATABASE_URL=config.database_url, CDEG_REDIS_URL=config.redis_url,
               CDEG_REDIS_PREFIX=config.redis_prefix, CDEG_INSTANCE_DIR=str(config.instance_dir),
               CDEG_DATA_KEY=config.data_key,
               CDEG_ISSUER=config.issuer)
    try:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "worker", "--burst"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        job.refresh()
        assert job.get_status() == "finished"
        assert job.return_value() == 0   # the sweep ran; nothing has lapsed yet on the real clock
        done = {r["idempotency_key"]: r["done_at"] for r in _rows(gw)}
        assert done["sweep-now"] is not None
        # the worker also asked for the periodic sweep (one row per window) and ran it
        assert any(k.startswith("sweep.expire_consents:") and v for k, v in done.items())
    finally:  # RQ keeps its own keys outside our prefix: remove this run's
        queue_for(gw).delete(delete_jobs=True)
        job.delete()
        gw.close()


def test_an_inline_job_runs_against_the_apps_gateway_not_one_built_from_the_environment(
        embedded_flow, clock, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_installed", None)         # a fresh process
    monkeypatch.setenv("CDEG_INSTANCE_DIR", str(tmp_path / "elsewhere"))
    gw = embedded_flow.gw
    embedded_flow.tokens()
    clock.advance(91 * 86400)
    with gw.transaction() as conn:
        outbox.add(conn, gw.clock.now(), "sweep.expire_consents", {}, key="sweep")
    assert _statuses(gw) == ["expired"]
    assert not (tmp_path / "elsewhere").exists()


def test_outside_a_request_or_a_worker_there_is_no_gateway_to_reach(monkeypatch):
    monkeypatch.setattr(runtime, "_installed", None)
    with pytest.raises(RuntimeError, match="no gateway in this process"):
        runtime.current()


def test_a_job_that_marks_its_row_done_in_its_own_transaction_commits_both_or_neither(
        gw, monkeypatch):
    outcomes = []

    def job(gw, **args):
        with gw.transaction() as conn:
            outbox.done_in(conn, gw.clock.now())
            if not outcomes:
                outcomes.append("rolled back")
                raise RuntimeError("the job's last transaction fails after marking done")
        outcomes.append("committed")

    monkeypatch.setitem(JOBS, "test.marks_done", job)
    with gw.transaction() as conn:
        outbox.add(conn, gw.clock.now(), "test.marks_done", {}, key="marks-done-1")
    row = _rows(gw)[-1]
    assert row["done_at"] is None            # its transaction rolled back: not done
    gw.clock.advance(gw.config.job_timeout + 1)   # the failed run's lease ends
    outbox._run(gw, row["id"])
    assert _rows(gw)[-1]["done_at"] is not None and outcomes == ["rolled back", "committed"]


def test_the_expiry_sweep_is_on_rqs_own_schedule_in_the_worker(tmp_path, request, clock):
    from gateway.jobs import worker

    from .conftest import build_app, make_config
    config = make_config(tmp_path, "services", request, jobs_inline=False)
    app = build_app(config, clock)
    gw = runtime.of(app)
    runtime.install(gw)
    try:
        cron = worker.schedule(gw)
        [job] = cron.get_jobs()
        assert job.func is worker.sweep_due and job.interval == gw.config.sweep_every
        assert len(cron.enqueue_jobs()) == 1          # due at once
        assert cron.enqueue_jobs() == []              # not again until the interval passes
        [queued] = queue_for(gw).jobs
        assert queued.func_name == "gateway.jobs.worker.sweep_due" and queued.args == ()
        queued.perform()                              # what the worker runs
        keys = [r["idempotency_key"] for r in _rows(gw)]
        assert any(k.startswith("sweep.expire_consents:") for k in keys)
        queued.perform()                              # twice in one window: still one row
        assert len(_rows(gw)) == len(keys)
    finally:
        runtime.install(None)
        queue_for(gw).delete(delete_jobs=True)
        gw.close()
