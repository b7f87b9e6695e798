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
    ("rate limit (Redis pipeline)", "check (gateway/throttle.py"),
    ("release(): live check + connectors + write", "release (gateway/exchange/release.py"),
    ("  live consent SELECT (own connection)", "live_grant ("),
    ("  connectors: Router.fetch (3 lookups)", "Router.fetch ("),
    ("    requests: proxy/env lookups", "Session.merge_environment_settings ("),
    ("  guard UPDATE(s) in release(), incl. BEGIN",
     "release (gateway/exchange/release.py > Connection.execute (sqlalchemy"),
    ("  audit chain append", "append (gateway/audit/chain.py"),
    ("  COMMIT", "Connection.commit ("),
    ("pool checkout incl. pre-ping", "Pool.connect ("),
    ("  pre-ping round trip", "_do_ping_w_event ("),
    ("connection close (ROLLBACK, back to the pool)", "Connection.close (sqlalchemy"),
    ("all SQL round trips (psycopg wait)", "Connection.wait (psycopg"),
    ("JSON body (jsonify)", "jsonify ("),
    ("gunicorn close_graceful (waits for the client's FIN)", "close_graceful (gunicorn"),
]
EXCHANGE_CENTRES = [
    ("Flask view POST /oauth/token", "token (gateway/oauth/views.py"),
    ("client authentication (private_key_jwt)", "authenticate (gateway/oauth/client_auth.py"),
    ("  assertion ES256 verify (jwcrypto)", "verify (gateway/tokens/jose.py"),
    ("  assertion jti replay guard (Redis SET NX)", "RedisStore.claim_once ("),
    ("  requester SELECT", "get (gateway/requester.py"),
    ("  requester keys (parse / cache)", "KeyCache.key ("),
    ("code exchange (grant.exchange_code)", "exchange_code ("),
    ("  access token ES256 sign (jwcrypto)", "mint (gateway/tokens/access.py"),
    ("  audit chain append", "append (gateway/audit/chain.py"),
    ("  COMMIT", "Connection.commit ("),
    ("pool checkout incl. pre-ping", "Pool.connect ("),
    ("  pre-ping round trip", "_do_ping_w_event ("),
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
