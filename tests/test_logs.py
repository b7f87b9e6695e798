"""Logs are JSON lines with no personal data: the whole demo story runs with every gateway
logger at DEBUG, and no line holds the demo citizen's HKID, name, address, phone, e-mail, or a
JWT; a line that tried to would be scrubbed."""
from __future__ import annotations

import io
import json
import logging
import os
import re

from gateway import logs


def test_the_whole_demo_logs_no_personal_data_and_no_tokens():
    from gateway.demo.story import play
    stream = io.StringIO()
    handler = logs.configure(logging.DEBUG)          # the gateway's JSON handler (made once)
    logging.getLogger("cdeg").setLevel(logging.DEBUG)
    before = handler.setStream(stream)
    said: list[str] = []
    root = logging.getLogger()
    everything = logging.StreamHandler(stream)       # werkzeug, rq, requests... too
    root.addHandler(everything)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert play(said.append) == 0, said
    finally:
        root.removeHandler(everything)
        root.setLevel(level)
        handler.setStream(before)
        logging.getLogger("cdeg").setLevel(logging.INFO)
    written = stream.getvalue()
    assert written, "the demo logged nothing at all"
    for secret in ("A123456", "A1234563", "CHAN", "Tai Man", "陳大文", "Mei Foo", "Broadway",
                   "91234567", "9123 4567", "chan.taiman", "@example"):
        assert secret not in written, secret
    assert not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.", written), "a JWT in the logs"


def test_log_lines_are_json_and_scrub_what_slipped_in():
    stream = io.StringIO()
    handler = logs.configure(logging.INFO)
    before = handler.setStream(stream)
    try:
        logging.getLogger("cdeg.test").warning(
            "looked up A123456(3) for chan@example.com on 9123 4567 with eyJhbGciOi.eyJzdWIi.sig")
    finally:
        handler.setStream(before)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["level"] == "WARNING" and line["logger"] == "cdeg.test" and line["time"]
    assert line["message"] == "looked up [hkid] for [email] on [phone] with [jose]"


def test_a_jobs_log_lines_and_department_calls_carry_the_asking_requests_id(flow, monkeypatch):
    from gateway.jobs import outbox
    from gateway.jobs.registry import JOBS
    seen = {}

    def job(gw, **args):
        seen["request_id"] = logs.request_id()
        seen["sent"] = gw.departments.request_id()     # what X-Request-ID would carry
        logging.getLogger("cdeg.jobs").warning("the job ran")

    monkeypatch.setitem(JOBS, "test.traced", job)
    stream = io.StringIO()
    handler = logs.configure(logging.INFO)          # the app's own JSON handler
    before = handler.setStream(stream)
    try:
        with flow.app.test_request_context("/"):
            from flask import g
            g.request_id = "req0123456789abc"
            with flow.gw.transaction() as conn:
                outbox.add(conn, flow.gw.clock.now(), "test.traced", {}, key="traced-1")
    finally:
        handler.setStream(before)
    assert seen == {"request_id": "req0123456789abc", "sent": "req0123456789abc"}
    line = json.loads([x for x in stream.getvalue().splitlines() if "the job ran" in x][0])
    assert line["request_id"] == "req0123456789abc"


def test_request_ids_are_unique_in_a_process_and_across_a_fork():
    from gateway.logs import new_request_id
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                  # a forked worker draws its own prefix
        try:
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    forked = os.read(read, 64).decode()
    os.waitpid(child, 0)
    os.close(read)
    assert forked[:8] != ids[0][:8] and forked not in ids
