"""The load drivers: wrk for GET endpoints, a few processes of threads for the token exchange. Each answers
one ``Run``: requests per second, p50/p99 latency and how many answers were not 2xx."""
from __future__ import annotations

import http.client
import multiprocessing
import re
import statistics
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

WRK = "/usr/bin/wrk"
BEARER_SCRIPT = Path(__file__).with_name("wrk_bearer.lua")
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class Run:
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failures: int                       # non-2xx answers and socket errors
    statuses: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# -- wrk ---------------------------------------------------------------------------------------

def wrk(target: str, url: str, tokens_file: Path, *, connections: int, duration: float,
        threads: int = 2) -> Run:
    """One wrk run with the bearer script (hello gets the same header, for the same client
    cost)."""
    out = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
                          "--latency", "-s", str(BEARER_SCRIPT), url, "--", str(tokens_file)],
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(target, out.stdout)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * UNITS_MS[unit]


def parse_wrk(target: str, text: str) -> Run:
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, text)
        if match is None:
            if default is None:
                raise RuntimeError(f"wrk output lacks {pattern!r}:\n{text}")
            return default
        return match.group(1)

    non_2xx = int(find(r"Non-2xx or 3xx responses:\s+(\d+)", "0"))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", text)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    total = int(find(r"(\d+) requests in"))
    return Run(target=target, rps=float(find(r"Requests/sec:\s+([\d.]+)")),
               p50_ms=_ms(find(r"\s50%\s+([\d.]+\w+)")), p99_ms=_ms(find(r"\s99%\s+([\d.]+\w+)")),
               requests=total, failures=non_2xx + errors,
               statuses={"non_2xx": non_2xx, "socket_errors": errors})


# -- the token exchange --------------------------------------------------------------------------
# Sent by a few processes (one GIL each), each with a few threads, over http.client with the
# bodies encoded before the clock starts: the driver shares the two cores with the gateway, so
# its own cost per request is kept small (requests' Session cost about 4x more CPU a call).

def _post(host: str, port: int, path: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})
        answer = conn.getresponse()
        answer.read()
        status = answer.status
        conn.close()
    except OSError:
        status = 0
    return status, (time.perf_counter() - started) * 1000


def _send_share(url: str, bodies: list[bytes], threads: int, go, answers) -> None:
    """One driver process: wait for ``go``, send its share with ``threads`` threads, put
    (first start, last end, [(status, ms)]) on ``answers``."""
    parts = urlsplit(url)
    go.wait()
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(lambda body: _post(parts.hostname, parts.port, parts.path, body),
                             bodies))
    answers.put((started, time.perf_counter(), done))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def exchange_batch(token_url: str, forms: list[dict], *, workers: int = 16,
                   processes: int = 4) -> Run:
    """POST every prepared token request, ``workers`` at a time across ``processes`` driver
    processes; the rate is the batch over the wall time from the first send to the last
    answer."""
    bodies = [urlencode(form).encode() for form in forms]
    context = multiprocessing.get_context("fork")
    go, answers = context.Event(), context.Queue()
    shares = [bodies[n::processes] for n in range(processes)]
    drivers = [context.Process(target=_send_share,
                               args=(token_url, share, max(1, workers // processes), go, answers))
               for share in shares if share]
    for driver in drivers:
        driver.start()
    go.set()
    results = [answers.get(timeout=300) for _ in drivers]
    for driver in drivers:
        driver.join()
    elapsed = max(end for _, end, _ in results) - min(start for start, _, _ in results)
    replies = [reply for _, _, done in results for reply in done]
    statuses = Counter(str(status) for status, _ in replies)
    latencies = [ms for _, ms in replies]
    return Run(target="token exchange", rps=len(forms) / elapsed,
               p50_ms=statistics.median(latencies), p99_ms=percentile(latencies, 99),
               requests=len(forms), failures=len(forms) - statuses.get("200", 0),
               statuses=dict(statuses))
