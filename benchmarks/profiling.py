"""Sample one gunicorn worker with py-spy while load runs, and say where its time goes.

Wall-clock samples (``--idle``), so time spent waiting on PostgreSQL, Redis or a department
service counts; shares are of the samples in which the worker was handling a request.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

IN_REQUEST = "SyncWorker.handle ("

# (label, marker) — inclusive shares; they overlap where one calls another. A marker is a frame
# (``function (path``), or "caller > callee" for a call made directly from one to the other.
DATA_CENTRES = [
    ("Flask view GET /api/v1/data", "data (gateway/api/data.py"),
    ("bearer token verify (in-process cache)", "AccessTokenVerifier.verify ("),
    ("rate limit (a lease, or a Redis round trip)", "Leases.spend (gateway/rate_limits.py"),
    ("  Redis round trip", "RedisStore.take (gateway/store/redis.py"),
    ("release(): grant, connectors, write", "release (gateway/exchange/release.py"),
    ("  live-grant SELECT (a token's first call only)", "live_grant ("),
    ("  connectors: Router.fetch (3 lookups)", "Router.fetch ("),
    ("    reply validation (marshmallow)", "Schema.load (marshmallow"),
    ("  release write (one prepared statement, its durable commit)", "release_prepared ("),
    ("pool checkout and return", "Prepared.cursor (gateway/store/prepared.py"),
    ("all SQL round trips (psycopg wait)", "Connection.wait (psycopg"),
    ("JSON body (jsonify)", "jsonify ("),
    ("gunicorn close_graceful (waits for the client's FIN)", "close_graceful (gunicorn"),
]
EXCHANGE_CENTRES = [
    ("Flask view POST /oauth/token", "token (gateway/oauth/views.py"),
    ("the exchange in two statements", "exchange_code_at_once (gateway/oauth/grant.py"),
    ("  the code, consent and client SELECT", "exchange_code_at_once (gateway/oauth/grant.py > "
                                              "Prepared.one ("),
    ("  client authentication (private_key_jwt)", "authenticate_with ("),
    ("    assertion ES256 verify (jwcrypto)", "verify (gateway/tokens/jose.py"),
    ("    assertion jti replay guard + rate limit (Redis)", "RedisStore.claim_once_and_hit ("),
    ("  access token ES256 sign (jwcrypto)", "mint (gateway/tokens/access.py"),
    ("  the write: code, tokens, entry (one statement, its commit)", "issue_for_code ("),
    ("the transactional path (anything unusual)", "exchange_code (gateway/oauth/grant.py"),
    ("all SQL round trips (psycopg wait)", "Connection.wait (psycopg"),
    ("gunicorn close_graceful (waits for the client's FIN)", "close_graceful (gunicorn"),
]


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, out: Path, rate: int = 200) -> subprocess.Popen:
    """Begin sampling ``pid``; ``finish`` stops it and has the samples written to ``out``."""
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", str(rate), "--idle",
                            "-f", "raw", "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)   # attached before the load starts
    return spy


def finish(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.strip()}")


def _frames(stack: str) -> list[str]:
    return [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]


def read_stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((_frames(stack), int(count)))
    return stacks


def summarise(raw: Path, centres: list[tuple[str, str]], top: int = 12) -> dict:
    """Shares (in %) of the in-request samples: named cost centres, and the leaf functions
    where the samples were taken (self time)."""
    stacks = [(frames, n) for frames, n in read_stacks(raw)
              if any(IN_REQUEST in f for f in frames)]
    total = sum(n for _, n in stacks) or 1
    shares = []
    for label, marker in centres:
        hits = sum(n for frames, n in stacks if _marked(frames, marker))
        shares.append({"centre": label, "share": round(100 * hits / total, 1)})
    leaves, packages = Counter(), Counter()
    for frames, n in stacks:
        leaves[frames[-1]] += n
        packages[package_of(frames[-1])] += n
    return {"raw": raw.name, "samples": total, "centres": shares,
            "self_by_package": [{"package": p, "share": round(100 * n / total, 1)}
                                for p, n in packages.most_common(top)],
            "self_top": [{"frame": f, "share": round(100 * n / total, 1)}
                         for f, n in leaves.most_common(top)]}


def _marked(frames: list[str], marker: str) -> bool:
    if " > " not in marker:
        return any(marker in f for f in frames)
    caller, callee = marker.split(" > ", 1)
    return any(caller in a and callee in b for a, b in zip(frames, frames[1:]))


def package_of(frame: str) -> str:
    """``expect (sqlalchemy/sql/coercions.py)`` → ``sqlalchemy``; ``<frozen os>`` → ``os``."""
    match = re.search(r"\((?:<frozen )?([A-Za-z0-9_]+)[/.>]", frame)
    return match.group(1) if match else "?"
