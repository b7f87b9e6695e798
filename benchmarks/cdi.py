"""CDEG benchmark: the CDI bridge's query path against RQ's own floor, side by side in one run.

    python benchmarks/cdi.py [--queries 300] [--pairs 2] [--workers 2] [--quick] [--profile]

Like ``benchmarks/run.py`` it creates a fresh PostgreSQL database, a Redis key prefix and an
instance folder, runs ``cdeg db upgrade`` and ``cdeg seed --demo``, and removes everything
again at the end (also on Ctrl-C, SIGTERM or an error). It starts:

- the gateway under ``gunicorn -w 2`` (sync workers) with a real Redis URL, so its jobs go to
  RQ (not inline);
- ``--workers`` real ``cdeg worker`` processes (RQ ``SimpleWorker``, with their outbox relay,
  sequencer and callback threads beside them);
- as many RQ ``SimpleWorker`` processes of ``benchmarks/rq_floor.py`` on a second queue of the
  same Redis, for the floor.

Then it obtains access tokens for ``bank-of-example`` over HTTP (``benchmarks/grants.py``) and
measures, alternating A B A B for ``--pairs``:

A. **CDI query**: ``POST /cdi/v1/queries``, each a freshly signed message (``gateway.demo.agent.FI``,
   signed before the clock starts) with a unique ``query_id``, the bank's five consented items;
   the gateway stores it with its outbox row, relays it to RQ after the commit and answers 202;
   a ``cdeg worker`` runs ``gateway/jobs/cdi_query.py`` (live grant, departments in-process,
   the result sealed as a JWE, the release recorded) and marks the query ``done``.
B. **RQ floor**: ``benchmarks.rq_floor.noop`` enqueued on the floor queue (the same enqueue
   options as the outbox relay uses) and run by the floor workers.

Load: closed loop, ``--concurrency`` submitters (default two per RQ worker, so each worker has
one job waiting while it runs one), each sending its next query (enqueueing its next job) as
soon as its previous one is seen done, until ``--queries`` have been sent. The same on both
sides.

Times, all ``time.time()`` on this machine:

- *enqueued*: when the POST returned 202 (B: when ``Queue.enqueue`` returned);
- *ready*: when a watcher first saw it done. **One watcher thread polls every 5 ms, with one
  statement for all the outstanding ones**: for A, one prepared ``SELECT query_id, status FROM
  cdi_queries WHERE client_id = … AND query_id = ANY(<outstanding>) AND status IN ('done',
  'failed')`` on its own autocommit connection (``finished_at`` has only second resolution,
  and polling ``GET /cdi/v1/queries/<id>`` that often would load the gateway being measured);
  for B, one Redis pipeline of ``HGET <job> status``. The time recorded is when that poll was
  sent, so a result is seen on average about half an interval (2.5 ms) after it was ready, on
  both sides alike.
- RQ's own timestamps of each job (microseconds; read after the run, outside the clock):
  *queue wait* = ``started_at - enqueued_at`` and *job run* = ``ended_at - started_at``. For A
  the job is the outbox row's (``gateway.jobs.outbox.run``: the lease, ``run_query``, marking
  the row done), so *job run* also counts the outbox bookkeeping after the result was ready.

Per run: completed per second (completed over the wall time from the first send to the last
ready), enqueued→ready p50 and p99, RQ's queue wait and job run p50, and the CPU each group
of processes spent per item (``/proc``: the driver, gunicorn, the RQ workers, and this
database's PostgreSQL backends). Per pair: **ratio = CDI p50 / floor p50** (the aim: ≤ 3).
``--profile`` adds one more CDI run with py-spy sampling one ``cdeg worker`` (wall clock,
``--idle``), and says where its main thread's time went.

Other settings changed for the benchmark: ``CDEG_OAUTH_RATE_PER_MINUTE`` is raised to 10^6,
since query submissions count against the FI's OAuth rate limit (6 000 a minute by default),
and ``RQ_KEY_PREFIX`` (RQ's documented setting, read when ``rq`` is imported) is set to
``cdeg-bench-rq-<random>`` for this process and every process it starts, so RQ's keys (its job
ids ``outbox-<n>`` are not unique across gateways sharing a Redis) cannot meet another run's,
and are deleted at the end with the gateway's.

The table is printed on stdout (progress on stderr) and the whole result written as JSON to
``benchmarks/results/cdi-<time>.json``.
"""
from __future__ import annotations

import os
import sys
import uuid

# RQ reads its key prefix once, when it is imported; set it before anything imports rq here,
# and every process started below inherits it.
RQ_KEY_PREFIX = f"cdeg-bench-rq-{uuid.uuid4().hex[:12]}"
if "rq" in sys.modules:
    raise RuntimeError("benchmarks/cdi.py must set RQ_KEY_PREFIX before rq is imported")
os.environ["RQ_KEY_PREFIX"] = RQ_KEY_PREFIX

import argparse  # noqa: E402
import http.client  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import redis  # noqa: E402

from benchmarks import grants, profiling, report, servers  # noqa: E402
from benchmarks.load import percentile  # noqa: E402

TARGET_RATIO = 3.0            # CDI p50 / floor p50, the aim
POLL_INTERVAL = 0.005         # the watcher's period, seconds
READY_TIMEOUT = 60.0          # an item not seen done by then counts as lost
SETTLE = 1.5                  # pause after each run: the workers' sequencer integrates the
                              # run's audit entries (every second) before the next run starts
FLOOR_JOB = "benchmarks.rq_floor.noop"
GATEWAY_QUEUE = "cdeg"        # gateway/store/queue.py: QUEUE_NAME, after the gateway's prefix
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    queries: int
    pairs: int
    workers: int                 # RQ worker processes, on each side
    concurrency: int             # submitters, each with one item in flight
    warmup: int
    tokens: int
    profile: bool
    gunicorn_workers: int = 2

    @property
    def described(self) -> str:
        return (f"{self.workers} RQ SimpleWorker processes a side, {self.concurrency} in flight, "
                f"{self.queries} per run, gateway gunicorn -w {self.gunicorn_workers} (sync)")


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300, help="queries (and jobs) per run")
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs")
    parser.add_argument("--workers", type=int, default=2,
                        help="cdeg worker processes, and as many floor workers")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="submitters, each with one item in flight (default 2 per worker)")
    parser.add_argument("--tokens", type=int, default=4,
                        help="access tokens (distinct consents) the queries rotate among")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 queries per run, 2 pairs, a short warm-up")
    parser.add_argument("--profile", action="store_true",
                        help="also sample one cdeg worker with py-spy during one more CDI run")
    args = parser.parse_args(argv)
    concurrency = args.concurrency or 2 * args.workers
    if args.quick:
        return Settings(queries=100, pairs=2, workers=args.workers, concurrency=concurrency,
                        warmup=10, tokens=2, profile=args.profile)
    return Settings(queries=args.queries, pairs=args.pairs, workers=args.workers,
                    concurrency=concurrency, warmup=30, tokens=args.tokens,
                    profile=args.profile)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the RQ worker processes --------------------------------------------------------------------

@dataclass
class WorkerPool:
    """``count`` processes running ``command``, each an RQ worker on ``queue_name``; all
    write to one log."""

    name: str
    command: list[str]
    count: int
    queue_name: str
    log_path: Path
    env: dict
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        for _ in range(self.count):
            self.processes.append(subprocess.Popen(self.command, cwd=REPO, env=self.env,
                                                   stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def wait_ready(self, connection: redis.Redis, timeout: float = 60.0) -> None:
        """Until every process has registered as a worker of the queue."""
        from rq import Queue, Worker
        queue = Queue(self.queue_name, connection=connection)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise servers.ServerFailed(f"{self.name} exited with {process.returncode}:\n"
                                               f"{self.log_tail()}")
            if Worker.count(connection=connection, queue=queue) >= self.count:
                return
            time.sleep(0.2)
        raise servers.ServerFailed(f"{self.name}: not all registered after {timeout:.0f} s:\n"
                                   f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (RQ's warm shutdown: the job at hand finishes), then SIGKILL after 15 s."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines()
                if any(m in line for m in servers.PROBLEM_MARKERS)]


@contextmanager
def running(pool: WorkerPool, connection: redis.Redis):
    pool.start()
    try:
        pool.wait_ready(connection)
        yield pool
    except Exception:
        print(f"--- {pool.name}: end of its log ---\n{pool.log_tail()}", file=sys.stderr)
        raise
    finally:
        pool.stop()


@contextmanager
def rq_keys_deleted():
    """At the end, delete every key under this run's RQ_KEY_PREFIX."""
    try:
        yield
    finally:
        client = redis.Redis.from_url(servers.REDIS_URL)
        for key in client.scan_iter(match=RQ_KEY_PREFIX + ":*", count=1000):
            client.delete(key)


# -- CPU time, from /proc --------------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads), or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuMeter:
    """CPU spent by groups of processes between ``start()`` and ``stop()``. A group is a
    function answering its pids now (so PostgreSQL backends that appear meanwhile count
    whole)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        now = {}
        for name, pids in self.groups.items():
            now[name] = {pid: cpu for pid in pids() if (cpu := cpu_seconds(pid)) is not None}
        now["driver (this process)"] = {0: sum(os.times()[:2])}
        return now

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {name: sum(cpu - self.before.get(name, {}).get(pid, 0.0)
                          for pid, cpu in pids.items())
                for name, pids in after.items()}


def backend_pids(dsn: str, database: str) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return [row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))]
    return pids


# -- the watcher: when an item was first seen done ---------------------------------------------

class Watch:
    """One thread that, every ``interval``, asks ``look(outstanding ids)`` which of them are
    done (``{id: succeeded}``) and keeps, for each, the time that poll was sent; a submitter
    waits on the ``Event`` that ``expect`` gave it."""

    def __init__(self, look: Callable[[list[str]], dict[str, bool]],
                 interval: float = POLL_INTERVAL):
        self.look, self.interval = look, interval
        self.outstanding: dict[str, threading.Event] = {}
        self.seen: dict[str, tuple[float, bool]] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.polls = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="watch", daemon=True)

    def expect(self, ident: str) -> threading.Event:
        event = threading.Event()
        with self.lock:
            self.outstanding[ident] = event
        return event

    def forget(self, ident: str) -> None:
        with self.lock:
            self.outstanding.pop(ident, None)

    def _loop(self) -> None:
        next_at = time.monotonic()
        try:
            while not self.done.is_set():
                with self.lock:
                    ids = list(self.outstanding)
                if ids:
                    at = time.time()
                    found = self.look(ids)
                    self.polls += 1
                    with self.lock:
                        for ident, ok in found.items():
                            event = self.outstanding.pop(ident, None)
                            if event is not None:
                                self.seen[ident] = (at, ok)
                                event.set()
                next_at += self.interval
                self.done.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            with self.lock:
                for event in self.outstanding.values():
                    event.set()

    def __enter__(self) -> "Watch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        if self.error is not None and exc[0] is None:
            raise RuntimeError(f"the watcher failed: {self.error!r}") from self.error


def cdi_look(conn: psycopg.Connection, client_id: str) -> Callable[[list[str]], dict[str, bool]]:
    sql = ("SELECT query_id, status FROM cdi_queries WHERE client_id = %s "
           "AND query_id = ANY(%s) AND status IN ('done', 'failed')")

    def look(ids: list[str]) -> dict[str, bool]:
        return {qid: status == "done"
                for qid, status in conn.execute(sql, (client_id, ids), prepare=True)}
    return look


def floor_look(connection: redis.Redis) -> Callable[[list[str]], dict[str, bool]]:
    from rq.job import Job

    def look(ids: list[str]) -> dict[str, bool]:
        pipe = connection.pipeline(transaction=False)
        for ident in ids:
            pipe.hget(Job.key_for(ident), "status")
        return {ident: status == b"finished" for ident, status in zip(ids, pipe.execute())
                if status in (b"finished", b"failed")}
    return look


# -- one run: submitters in a closed loop ----------------------------------------------------------

@dataclass
class Sample:
    ident: str
    sent: float              # time.time() when the POST (the enqueue) was sent
    enqueued: float          # ... and when it returned
    status: int              # HTTP status (202), or 0 for an enqueue that raised
    ready: float | None = None
    ok: bool = False
    rq_job: str | None = None
    queue_wait_ms: float | None = None   # RQ started_at - enqueued_at
    job_run_ms: float | None = None      # RQ ended_at - started_at

    @property
    def latency_ms(self) -> float | None:
        return None if self.ready is None else (self.ready - self.enqueued) * 1000


def closed_loop(items: list[tuple[str, object]], submit: Callable[[object], int],
                watch: Watch, concurrency: int) -> list[Sample]:
    """``concurrency`` threads; each submits its next item once its previous one is seen done
    (or refused, or lost after READY_TIMEOUT)."""
    shares = [items[n::concurrency] for n in range(concurrency)]
    samples: list[Sample] = []
    lock = threading.Lock()
    shares = [share for share in shares if share]
    go = threading.Barrier(len(shares))           # all start together

    def submitter(share: list[tuple[str, object]]) -> None:
        go.wait()
        for ident, payload in share:
            event = watch.expect(ident)
            sent = time.time()
            status = submit(payload)
            sample = Sample(ident, sent, time.time(), status)
            if status in (202, 200):
                event.wait(READY_TIMEOUT)
            watch.forget(ident)
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=submitter, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sample in samples:
        if sample.ident in watch.seen:
            sample.ready, sample.ok = watch.seen[sample.ident]
    return samples


def post_jose(url: str) -> Callable[[bytes], int]:
    """A POST over ``http.client`` (requests' Session costs several times the CPU a call, on
    cores the gateway shares); gunicorn's sync workers close each connection anyway."""
    parts = urlsplit(url)

    def send(body: bytes) -> int:
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request("POST", parts.path, body, {"Content-Type": "application/jose"})
            answer = conn.getresponse()
            answer.read()
            conn.close()
            return answer.status
        except OSError:
            return 0
    return send


def _ts(moment) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:          # RQ's times are UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def add_rq_times(samples: list[Sample], connection: redis.Redis) -> None:
    """RQ's own timestamps of each sample's job, read after the run."""
    from rq.job import Job
    wanted = [s for s in samples if s.rq_job]
    for start in range(0, len(wanted), 200):
        chunk = wanted[start:start + 200]
        for sample, job in zip(chunk, Job.fetch_many([s.rq_job for s in chunk], connection)):
            if job is None:
                continue
            enqueued, started, ended = (_ts(job.enqueued_at), _ts(job.started_at),
                                        _ts(job.ended_at))
            if enqueued and started:
                sample.queue_wait_ms = (started - enqueued) * 1000
            if started and ended:
                sample.job_run_ms = (ended - started) * 1000


def summarise(kind: str, samples: list[Sample], cpu: dict[str, float], polls: int) -> dict:
    done = [s for s in samples if s.ok]
    latencies = [s.latency_ms for s in done]
    statuses = Counter(str(s.status) for s in samples)
    wall = (max(s.ready for s in done) - min(s.sent for s in samples)) if done else 0.0

    def p(values: list[float], pct: float) -> float | None:
        return round(percentile(values, pct), 2) if values else None

    waits = [s.queue_wait_ms for s in done if s.queue_wait_ms is not None]
    runs = [s.job_run_ms for s in done if s.job_run_ms is not None]
    return {
        "kind": kind, "sent": len(samples), "completed": len(done),
        "refused": sum(1 for s in samples if s.status not in (200, 202)),
        "failed": sum(1 for s in samples if s.ready is not None and not s.ok),
        "lost": sum(1 for s in samples if s.status in (200, 202) and s.ready is None),
        "statuses": dict(statuses), "wall_s": round(wall, 3),
        "rate": round(len(done) / wall, 1) if wall else 0.0,
        "p50_ms": p(latencies, 50), "p99_ms": p(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "rq_queue_wait_p50_ms": p(waits, 50), "rq_job_run_p50_ms": p(runs, 50),
        "rq_job_run_p99_ms": p(runs, 99),
        "cpu_ms_per_item": {name: round(1000 * seconds / max(1, len(done)), 3)
                            for name, seconds in cpu.items()},
        "polls": polls,
        "latencies_ms": [round(v, 2) for v in latencies],
    }


# -- the two sides ---------------------------------------------------------------------------------

@dataclass
class Bench:
    settings: Settings
    gateway: servers.Gunicorn
    cdeg_workers: WorkerPool
    floor_workers: WorkerPool
    floor_queue: object            # rq.Queue
    redis: redis.Redis
    dsn: str
    supply: grants.TokenSupply
    meter: CpuMeter
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    runs: int = 0

    def next_prefix(self, kind: str) -> str:
        self.runs += 1
        return f"bench-{self.tag}-{kind}{self.runs}-"


def cdi_run(bench: Bench, count: int, label: str) -> dict:
    """Run A: ``count`` signed queries through POST /cdi/v1/queries, closed loop."""
    from gateway.demo.agent import FI
    from gateway.demo.seed import private_jwks
    tokens = bench.supply.fresh()
    requester = grants.bank(bench.gateway.url)
    fi = FI(bench.gateway.url, grants.BANK, private_jwks(grants.BANK), requester.redirect_uri)
    prefix, items = bench.next_prefix("q"), grants.ONGOING_DETAIL["data_items"]
    # every message signed before the clock starts (iat stays within its 5 minutes)
    work = [(f"{prefix}{n}",
             fi.message(f"{prefix}{n}", tokens[n % len(tokens)], items).encode("ascii"))
            for n in range(count)]
    with psycopg.connect(bench.dsn, autocommit=True) as conn, \
            Watch(cdi_look(conn, grants.BANK)) as watch:
        bench.meter.start()
        samples = closed_loop(work, post_jose(bench.gateway.url + "/cdi/v1/queries"), watch,
                              bench.settings.concurrency)
        cpu = bench.meter.stop()
        # the RQ job of each query: its outbox row's (gateway/jobs/outbox.py: outbox-<id>)
        jobs = dict(conn.execute(
            "SELECT q.query_id, 'outbox-' || o.id FROM cdi_queries q JOIN outbox o "
            "ON o.idempotency_key = 'cdi.run_query:' || q.id WHERE q.query_id LIKE %s",
            (prefix + "%",)).fetchall())
    for sample in samples:
        sample.rq_job = jobs.get(sample.ident)
    add_rq_times(samples, bench.redis)
    time.sleep(SETTLE)
    result = summarise("cdi", samples, cpu, watch.polls)
    say(f"  {label}: CDI {result['rate']:.1f} queries/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms" + _trouble(result))
    return result


def floor_run(bench: Bench, count: int, label: str) -> dict:
    """Run B: ``count`` empty jobs on the floor queue, closed loop."""
    prefix = bench.next_prefix("f")
    queue = bench.floor_queue

    def enqueue(job_id: str) -> int:
        # the same options as the gateway's outbox relay (gateway/jobs/outbox.py)
        try:
            queue.enqueue(FLOOR_JOB, job_id=job_id, job_timeout=120, failure_ttl=3600,
                          result_ttl=600)
        except redis.RedisError:
            return 0
        return 202

    work = [(f"{prefix}{n}", f"{prefix}{n}") for n in range(count)]
    with Watch(floor_look(bench.redis)) as watch:
        bench.meter.start()
        samples = closed_loop(work, enqueue, watch, bench.settings.concurrency)
        cpu = bench.meter.stop()
    for sample in samples:
        sample.rq_job = sample.ident
    add_rq_times(samples, bench.redis)
    time.sleep(SETTLE)
    result = summarise("floor", samples, cpu, watch.polls)
    say(f"  {label}: floor {result['rate']:.1f} jobs/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms" + _trouble(result))
    return result


def _trouble(result: dict) -> str:
    bad = {k: result[k] for k in ("refused", "failed", "lost") if result[k]}
    return f"; !! {bad} statuses {result['statuses']}" if bad else ""


def pair_of(cdi: dict, floor: dict) -> dict:
    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None
    return {"cdi": cdi, "floor": floor,
            "ratio_p50": ratio(cdi["p50_ms"], floor["p50_ms"]),
            "ratio_p99": ratio(cdi["p99_ms"], floor["p99_ms"]),
            "ratio_rate": ratio(floor["rate"], cdi["rate"]),
            "ratio_job_run_p50": ratio(cdi["rq_job_run_p50_ms"], floor["rq_job_run_p50_ms"])}


# -- the profile of one cdeg worker ---------------------------------------------------------------

# Exclusive: each sample of the worker's main thread goes to the first label whose marker it
# holds (markers as in benchmarks/profiling.py: a frame, or "caller > callee").
JOB_PARTS = [
    ("run_query: live grant read (live_grant)", "live_grant ("),
    ("run_query: connectors in-process (Router.fetch)", "Router.fetch ("),
    ("run_query: seal (JWS sign + JWE encrypt)", "seal (gateway/tokens/jwe.py"),
    ("run_query: requester + its enc key", "get (gateway/requester_registry.py"),
    ("run_query: release txn (record_in, result, commit)", "run_query (gateway/jobs/cdi_query.py"
                                                           " > Gateway.in_transaction ("),
    ("run_query: row read + status 'running' txn, rest", "run_query (gateway/jobs/cdi_query.py"),
    ("outbox: lease txn + done txn", "_run (gateway/jobs/outbox.py"),
    ("RQ perform_job, the rest", "perform_job (rq"),
    ("RQ after the job (results, registries)", "handle_job_success (rq"),
    ("RQ waiting for a job (dequeue)", "dequeue_job_and_maintain_ttl (rq"),
    ("RQ worker loop, the rest", "work (rq"),
]
INCLUSIVE = [
    ("all PostgreSQL round trips (psycopg waits)", "Connection.wait (psycopg"),
    ("all transaction commits", "Connection.commit ("),
    ("all Redis round trips", "read_response (redis"),
]


def profile_worker(bench: Bench, stem: Path) -> dict:
    """One more CDI run while py-spy samples the first cdeg worker."""
    out = stem.with_name(f"{stem.name}-profile-cdeg-worker.raw")
    spy = profiling.start(bench.cdeg_workers.pids()[0], out)
    try:
        run = cdi_run(bench, bench.settings.queries, "profiled")
    finally:
        profiling.finish(spy)
    stacks = [(frames, n) for frames, n in profiling.read_stacks(out)
              if not any("_bootstrap (threading.py" in f for f in frames)]   # main thread only
    total = sum(n for _, n in stacks) or 1
    parts = Counter()
    for frames, n in stacks:
        label = next((label for label, marker in JOB_PARTS if profiling._marked(frames, marker)),
                     "other")
        parts[label] += n
    background = sum(n for frames, n in profiling.read_stacks(out)
                     if any("_bootstrap (threading.py" in f for f in frames)
                     and not any(m in frames[-1] for m in ("wait (threading.py", "select")))
    packages = Counter()
    for frames, n in stacks:
        packages[profiling.package_of(frames[-1])] += n
    return {"raw": out.name, "samples_main_thread": total, "run": run,
            "parts": [{"part": label, "share": round(100 * parts[label] / total, 1)}
                      for label, _ in JOB_PARTS + [("other", "")] if parts[label]],
            "inclusive": [{"part": label, "share": round(100 * sum(
                n for frames, n in stacks if profiling._marked(frames, marker)) / total, 1)}
                for label, marker in INCLUSIVE],
            "self_by_package": [{"package": p, "share": round(100 * n / total, 1)}
                                for p, n in packages.most_common(10)],
            "background_thread_samples_not_waiting": background}


# -- the report ------------------------------------------------------------------------------------

def _cells(run: dict) -> str:
    return f"{run['rate']:>8.1f} {run['p50_ms']:>7.2f} {run['p99_ms']:>7.2f}"


def print_report(result: dict) -> None:
    pairs = result["pairs"]
    print()
    print(f"CDI query (POST /cdi/v1/queries → result ready) vs RQ empty job (enqueue → done)")
    print(f"{result['settings_described']}; ready seen by a "
          f"{POLL_INTERVAL * 1000:.0f} ms poll")
    print(f"{'':5} {'CDI query':<24}  {'RQ empty job':<24}")
    print(f"{'pair':>4} {'q/s  p50 ms  p99 ms':>24}  {'jobs/s  p50 ms  p99 ms':>24}"
          f"  {'p50 ratio':>9}  {'p99 ratio':>9}")
    for i, p in enumerate(pairs, 1):
        bad = sum(p[side][k] for side in ("cdi", "floor") for k in ("refused", "failed", "lost"))
        print(f"{i:>4} {_cells(p['cdi'])}  {_cells(p['floor'])}  {p['ratio_p50']:>9.2f}"
              f"  {p['ratio_p99']:>9.2f}" + (f"  !! {bad} refused, failed or lost" if bad else ""))
    verdict = "MET" if result["target_met"] else "MISSED"
    print(f"median p50 ratio {result['median_ratio_p50']:.2f} (aim ≤ {TARGET_RATIO:g}): {verdict}")
    print()
    print("RQ's own timestamps, p50 ms: queue wait (enqueued → started), job run (started → "
          "ended; for CDI the whole outbox job)")
    for i, p in enumerate(pairs, 1):
        c, f = p["cdi"], p["floor"]
        print(f"{i:>4}  CDI {c['rq_queue_wait_p50_ms']:>6.2f} {c['rq_job_run_p50_ms']:>7.2f}   "
              f"floor {f['rq_queue_wait_p50_ms']:>6.2f} {f['rq_job_run_p50_ms']:>7.2f}   "
              f"job run ratio {p['ratio_job_run_p50']:.2f}")
    print()
    print("CPU per completed item, ms (all processes of each group, /proc)")
    names = list(pairs[0]["cdi"]["cpu_ms_per_item"])
    print(f"{'':12}" + "".join(f"{n[:22]:>24}" for n in names))
    for i, p in enumerate(pairs, 1):
        for side in ("cdi", "floor"):
            cpu = p[side]["cpu_ms_per_item"]
            print(f"{i:>4} {side:<7}" + "".join(f"{cpu[n]:>24.2f}" for n in names))
    if result.get("profile"):
        prof = result["profile"]
        print()
        print(f"Profile, one cdeg worker's main thread during one more CDI run "
              f"({prof['samples_main_thread']} wall-clock samples, py-spy --idle):")
        for part in prof["parts"]:
            print(f"  {part['share']:5.1f}%  {part['part']}")
        print("  inclusive, overlapping the above:")
        for part in prof["inclusive"]:
            print(f"  {part['share']:5.1f}%  {part['part']}")
        print("  self time by package:")
        for pkg in prof["self_by_package"]:
            print(f"  {pkg['share']:5.1f}%  {pkg['package']}")
    for name, lines in result["server_log_problems"].items():
        if lines:
            print(f"\n{name} log reported {len(lines)} problem line(s), first ones:")
            print("\n".join("  " + line for line in lines[:10]))


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.profile and not profiling.available():
        say("--profile needs py-spy (pip install py-spy)")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # cleaned up like Ctrl-C
    from rq import Queue
    report.RESULTS.mkdir(exist_ok=True)
    stem = report.RESULTS / time.strftime("cdi-%Y%m%d-%H%M%S")
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": report.git_state(),
              "machine_before": report.machine(), "settings": asdict(settings),
              "settings_described": settings.described, "poll_interval_s": POLL_INTERVAL,
              "rq_key_prefix": RQ_KEY_PREFIX, "warmup": {}, "pairs": [],
              "server_log_problems": {}}
    with ExitStack() as stack:
        scratch = stack.enter_context(servers.scratch_dir())
        database_url = stack.enter_context(servers.fresh_database())
        prefix = stack.enter_context(servers.redis_prefix())
        stack.enter_context(rq_keys_deleted())
        database = database_url.rsplit("/", 1)[1]
        dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
        port = servers.free_port()
        env = servers.gateway_env(database_url=database_url, prefix=prefix,
                                  instance_dir=scratch / "instance", port=port)
        env["CDEG_OAUTH_RATE_PER_MINUTE"] = "1000000"
        say("\n".join(servers.prepare_instance(env)))
        connection = redis.Redis.from_url(servers.REDIS_URL)
        gateway = stack.enter_context(servers.serving(servers.Gunicorn(
            "gateway", "gateway.wsgi:app", port, scratch / "gateway.log", env=env,
            workers=settings.gunicorn_workers), "/readyz"))
        cdeg_workers = stack.enter_context(running(WorkerPool(
            "cdeg worker", servers.cdeg_command() + ["worker"], settings.workers,
            prefix + GATEWAY_QUEUE, scratch / "cdeg-worker.log", env), connection))
        floor_name = prefix + "floor"
        floor_workers = stack.enter_context(running(WorkerPool(
            "rq floor worker", [sys.executable, "-m", "benchmarks.rq_floor", floor_name],
            settings.workers, floor_name, scratch / "floor-worker.log", env), connection))
        say(f"gateway at {gateway.url}, {settings.workers} cdeg workers, "
            f"{settings.workers} floor workers; minting {settings.tokens} access tokens …")
        meter = CpuMeter({"gateway (gunicorn)": lambda: [gateway.process.pid,
                                                         *gateway.worker_pids()],
                          "cdeg workers": cdeg_workers.pids,
                          "floor workers": floor_workers.pids,
                          "postgres (this db)": backend_pids(servers.PG_ADMIN_DSN, database)})
        supply = grants.TokenSupply(gateway.url, settings.tokens, scratch / "tokens.txt")
        bench = Bench(settings, gateway, cdeg_workers, floor_workers,
                      Queue(floor_name, connection=connection), connection, dsn, supply, meter)
        say(f"warm-up ({settings.warmup} each):")
        result["warmup"] = {"cdi": cdi_run(bench, settings.warmup, "warm-up"),
                            "floor": floor_run(bench, settings.warmup, "warm-up")}
        for i in range(settings.pairs):
            say(f"pair {i + 1}:")
            cdi = cdi_run(bench, settings.queries, f"pair {i + 1}")
            floor = floor_run(bench, settings.queries, f"pair {i + 1}")
            result["pairs"].append(pair_of(cdi, floor))
        if settings.profile:
            say("profiling one cdeg worker during one more CDI run …")
            result["profile"] = profile_worker(bench, stem)
        result["server_log_problems"] = {"gateway": gateway.problems(),
                                         "cdeg worker": cdeg_workers.problems(),
                                         "rq floor worker": floor_workers.problems()}
    ratios = [p["ratio_p50"] for p in result["pairs"] if p["ratio_p50"] is not None]
    bad = sum(p[side][k] for p in result["pairs"] for side in ("cdi", "floor")
              for k in ("refused", "failed", "lost"))
    result["median_ratio_p50"] = round(statistics.median(ratios), 3) if ratios else None
    result["target_ratio"] = TARGET_RATIO
    result["target_met"] = bool(ratios) and result["median_ratio_p50"] <= TARGET_RATIO \
        and bad == 0
    result["machine_after"] = report.machine()
    print_report(result)
    path = report.write_json(result, stem)
    print(f"\nresult written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
