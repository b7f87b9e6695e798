"""Jobs: the expiry sweep writes what time already decided, inline and on a real RQ worker."""
from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from gateway.jobs.runtime import use_gateway
from gateway.jobs.sweeps import expire_consents
from gateway.store.db import audit_entries, consents
from gateway.store.queue import queue_for


def _statuses(gw) -> list[str]:
    with gw.db.connect() as conn:
        return sorted(conn.execute(select(consents.c.status)).scalars())


def test_sweep_expires_lapsed_consents_and_unanswered_requests(flow, clock):
    tokens = flow.tokens()           # approved for P90D
    flow.par()                       # requested, never answered
    use_gateway(flow.gw)
    assert expire_consents() == 0
    clock.advance(91 * 86400)
    assert flow.data(tokens["access_token"]).status_code == 401   # lapsed at once
    assert expire_consents() == 2
    assert _statuses(flow.gw) == ["expired", "expired"]
    with flow.gw.db.connect() as conn:
        events = list(conn.execute(select(audit_entries.c.event)).scalars())
    assert events.count("consent.expired") == 2
    assert expire_consents() == 0    # idempotent


def test_worker_runs_the_sweep_from_the_real_queue(tmp_path, request, clock):
    from .conftest import build_app, make_config
    config = make_config(tmp_path, "services", request, jobs_inline=False)
    app = build_app(config, clock)
    gw = app.extensions["cdeg"]
    from .flow import Flow
    Flow(app).par()
    job = queue_for(gw).enqueue(expire_consents, job_timeout=30, failure_ttl=300)
    assert job.args == ()            # jobs carry ids, never personal data
    env = dict(os.environ, CDEG_DATABASE_URL=config.database_url, CDEG_REDIS_URL=config.redis_url,
               CDEG_REDIS_PREFIX=config.redis_prefix, CDEG_INSTANCE_DIR=str(config.instance_dir),
               CDEG_ISSUER=config.issuer)
    clock.advance(0)
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "worker", "--burst"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    job.refresh()
    try:
        assert job.get_status() == "finished"
        assert job.return_value() == 0  # nothing has lapsed yet on the real clock
    finally:  # RQ keeps its own keys outside our prefix: remove this run's
        queue_for(gw).delete(delete_jobs=True)
        job.delete()
        app.extensions["cdeg"].close()


def test_an_inline_job_runs_against_the_apps_gateway_not_one_built_from_the_environment(
        embedded_flow, clock, tmp_path, monkeypatch):
    from gateway.jobs import runtime
    monkeypatch.setattr(runtime, "_gateway", None)          # a fresh process
    monkeypatch.setenv("CDEG_INSTANCE_DIR", str(tmp_path / "elsewhere"))
    gw = embedded_flow.gw
    embedded_flow.tokens()
    clock.advance(91 * 86400)
    job = queue_for(gw).enqueue(expire_consents)             # runs now, inline
    assert job.return_value() == 1
    assert _statuses(gw) == ["expired"]
    assert not (tmp_path / "elsewhere").exists()
