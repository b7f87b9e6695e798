"""The gateway's logs: JSON lines on stderr (python-json-logger), each with its time, level,
logger, message and — in a request — the request's id, which the department services are sent
too (``X-Request-ID``), so one call can be followed across them.

No personal data: log calls name types, ids and counts, never values; and as a second line of
defence every line is scrubbed before it is written — an HKID, a JWT or other compact JOSE
value, an e-mail address or an 8-digit Hong Kong phone number is replaced by its kind in
brackets (``tests/test_logs.py`` runs the whole demo and finds none).
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_SCRUB = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}"), "[jose]"),
    (re.compile(r"\b[A-Z]{1,2}[0-9]{6}\(?[0-9A]\)?", re.IGNORECASE), "[hkid]"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[email]"),
    (re.compile(r"(?<![\w/.:-])(?:\+852[ -]?)?[2-9][0-9]{3}[ -]?[0-9]{4}(?![\w/.:-])"), "[phone]"),
]


def scrub(text: str) -> str:
    for pattern, kind in _SCRUB:
        text = pattern.sub(kind, text)
    return text


# the request id of a job's asking request, while the job runs (gateway/jobs/outbox.py)
JOB_REQUEST: ContextVar[str | None] = ContextVar("cdeg_job_request", default=None)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            found = request_id()
            if found:
                record.request_id = found
        return True


class _Scrubbed(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(level: int = logging.INFO, stream=None) -> logging.Handler:
    """JSON lines for the ``cdeg`` loggers; idempotent."""
    root = logging.getLogger("cdeg")
    for handler in root.handlers:
        if getattr(handler, "cdeg_json", False):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.cdeg_json = True
    handler.setFormatter(_Scrubbed("{asctime}{levelname}{name}{message}", style="{",
                                   rename_fields={"asctime": "time", "levelname": "level",
                                                  "name": "logger"}))
    handler.addFilter(_RequestId())
    root.addHandler(handler)
    root.setLevel(level)
    return handler


_ids: tuple[int, str, itertools.count] | None = None   # (pid, prefix, counter), read at once


def new_request_id() -> str:
    """A new request's id: 16 hex digits, a random prefix per process then a counter, so unique
    in practice across processes (the prefix is drawn again after a fork) and within one until
    the counter wraps at 2^32. Not a secret — it is sent to the departments and written in every
    log line — so it is not drawn from the system's random source on every request."""
    global _ids
    ids = _ids
    if ids is None or ids[0] != os.getpid():
        ids = _ids = (os.getpid(), secrets.token_hex(4), itertools.count())
    return f"{ids[1]}{next(ids[2]) & 0xFFFFFFFF:08x}"


def request_id() -> str | None:
    """The current request's id — in a job, the id of the request that asked for it (None
    outside both): in every log line, and sent to the department services."""
    try:
        from flask import g, has_request_context
        if has_request_context():
            return g.get("request_id")
    except Exception:  # noqa: BLE001 - logging must never fail a request
        return None
    return JOB_REQUEST.get()
