"""CDEG benchmark: the CDI bridge's query path against RQ's own floor, side by side in one run.

    python benchmarks/cdi.py             # 300 per run, 2 pairs at each load (≈ 2 min)
    python benchmarks/cdi.py --quick     # 100 per run (≈ 1 min)
    python benchmarks/cdi.py --profile   # plus py-spy on one cdeg worker during one more run

Options: ``--queries N`` (per run, default 300), ``--pairs N`` (default 2), ``--workers N`` (RQ
worker processes a side, default 2), ``--concurrency C[,C…]`` (default ``W,2W`` for W workers),
``--tokens N`` (access tokens the queries rotate among, default 4), ``--quick``, ``--profile``.

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
measures, alternating A B A B for ``--pairs`` at each load:

A. **CDI query**: ``POST /cdi/v1/queries``, each a freshly signed message
   (``gateway.demo.agent.FI``, signed before the clock starts) with a unique ``query_id``, for
   the bank's five consented items; the gateway stores it with its outbox row, relays it to RQ
   after the commit and answers 202; a ``cdeg worker`` runs ``gateway/jobs/cdi_query.py``
   (live grant, departments in-process, the result sealed as a JWE, the release recorded) and
   marks the query ``done``.
B. **RQ floor**: ``benchmarks.rq_floor.noop`` enqueued on the floor queue (the same enqueue
   options as the outbox relay uses) and run by the floor workers.

Load: a closed loop of C submitter threads, each with one item in flight: it sends its next
query (enqueues its next job) as soon as its previous one is seen done, until ``--queries``
have been sent; the same on both sides. Two loads by default: **C = W** (one in flight per
worker: no item waits behind another, so the latency is the path's own; this is the headline
ratio) and **C = 2W** (each worker has one waiting while it runs one: the rate is near what the
workers can do, and the latency includes about one job's wait).

Times, all ``time.time()`` on this machine:

- *enqueued*: when the POST returned 202 (B: when ``Queue.enqueue`` returned);
- *ready*: when a watcher first saw it done. **One watcher thread polls every 5 ms**
  (``--poll-ms``), **with one statement for all the items outstanding**: for A, one prepared
  ``SELECT query_id, status FROM cdi_queries WHERE client_id = … AND query_id =
  ANY(<outstanding>) AND status IN ('done', 'failed')`` on its own autocommit connection
  (``finished_at`` has only second resolution, and polling ``GET /cdi/v1/queries/<id>`` that
  often would load the gateway being measured); for B, one Redis pipeline of ``HGET <job>
  status``. The time kept is when that poll was sent, so an item is seen on average about
  half an interval (2.5 ms) after it was ready, on both sides alike — which flatters the
  ratio, since the floor's own latency is about that size;
- hence also, from RQ's own timestamps of each job (microseconds, read after the run): *to
  job end* = ``ended_at`` - *enqueued*, no poll involved, and its parts *queue wait* =
  ``started_at - enqueued_at`` and *job run* = ``ended_at - started_at``. For A the job is the
  outbox row's (``gateway.jobs.outbox.run``: the lease, ``run_query``, marking the row done),
  so it ends one transaction after the result is ready.

Per run: completed per second (completed over the wall time from the first send to the last
ready), enqueued→ready p50 and p99, the same to RQ's job end, RQ's queue wait and job run, and
the CPU each group of processes spent per item (``/proc``: the driver, gunicorn, the RQ
workers, and this database's PostgreSQL backends). Per pair: **ratio = CDI p50 / floor p50**
(the aim: ≤ 3, at C = W), by the poll and by RQ's timestamps. ``--profile`` adds one more CDI
run (twice as many queries, at the highest load) with py-spy sampling one ``cdeg worker`` and
one gunicorn worker (wall clock, ``--idle``), and says where the worker's main thread spent
its time when it was not waiting for a job, and where the POST's went.

The FI's CDI rate limit (``cdi_rate_per_minute``, 6 000 messages a minute, not settable from
the environment) is left as it is: a default run sends about 1 300 queries in well under a
minute; with a larger ``--queries`` a refused submission (429) is counted and shown, and the
run does not count as meeting the aim. The one setting changed for the benchmark is
``RQ_KEY_PREFIX`` (RQ's documented setting, read when ``rq`` is imported), set to
``cdeg-bench-rq-<random>`` for this process and every process it starts, so that all of RQ's
keys of this run (jobs, results, registries, worker entries, which RQ otherwise keeps under
``rq:`` beside every other user of this Redis) are its own, and can all be deleted at the end.

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
    workers: int                  # RQ worker processes, on each side
    concurrency: tuple[int, ...]  # the loads: submitters, each with one item in flight
    warmup: int
    tokens: int
    profile: bool
    poll_ms: float = 5.0          # the watcher's period
    gunicorn_workers: int = 2

    @property
    def described(self) -> str:
        return (f"{self.workers} RQ SimpleWorker processes a side, {self.queries} per run, "
                f"gateway gunicorn -w {self.gunicorn_workers} (sync)")


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300, help="queries (and jobs) per run")
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs at each load")
    parser.add_argument("--workers", type=int, default=2,
                        help="cdeg worker processes, and as many floor workers")
    parser.add_argument("--concurrency", default=None,
                        help="the loads, comma-separated: submitters, each with one item in "
                             "flight (default: W,2W for W workers)")
    parser.add_argument("--tokens", type=int, default=4,
                        help="access tokens (distinct consents) the queries rotate among")
    parser.add_argument("--poll-ms", type=float, default=5.0,
                        help="how often the watcher looks for finished items (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 per run, 2 pairs, a short warm-up")
    parser.add_argument("--profile", action="store_true",
                        help="also sample one cdeg worker with py-spy during one more CDI run")
    args = parser.parse_args(argv)
    if args.concurrency:
        concurrency = tuple(int(c) for c in args.concurrency.split(","))
    else:
        concurrency = (args.workers, 2 * args.workers)
    if args.quick:
        return Settings(queries=100, pairs=2, workers=args.workers, concurrency=concurrency,
                        warmup=10, tokens=2, profile=args.profile, poll_ms=args.poll_ms)
    return Settings(queries=args.queries, pairs=args.pairs, workers=args.workers,
                    concurrency=concurrency, warmup=30, tokens=args.tokens,
                    profile=args.profile, poll_ms=args.poll_ms)


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
        return servers.log_tail(self.log_path, lines)

    def problems(self) -> list[str]:
        return servers.log_problems(self.log_path)


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

    def __init__(self, look: Callable[[list[str]], dict[str, bool]], interval: float):
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
                # every interval; after a slow poll, the next one at once (no catching up)
                next_at = max(next_at + self.interval, time.monotonic())
                self.done.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - raised again by __exit__
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
    status: int              # HTTP status (202 expected; the floor's enqueue counts as 202),
                             # 0 for a socket error or an enqueue that raised
    ready: float | None = None
    ok: bool = False
    rq_job: str | None = None
    queue_wait_ms: float | None = None   # RQ started_at - enqueued_at
    job_run_ms: float | None = None      # RQ ended_at - started_at
    job_ended: float | None = None       # RQ ended_at

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
            sample.job_ended = ended


def summarise(kind: str, samples: list[Sample], cpu: dict[str, float], polls: int) -> dict:
    done = [s for s in samples if s.ok]
    latencies = [s.latency_ms for s in done]
    statuses = Counter(str(s.status) for s in samples)
    wall = (max(s.ready for s in done) - min(s.sent for s in samples)) if done else 0.0

    def p(values: list[float], pct: float) -> float | None:
        return round(percentile(values, pct), 2) if values else None

    waits = [s.queue_wait_ms for s in done if s.queue_wait_ms is not None]
    runs = [s.job_run_ms for s in done if s.job_run_ms is not None]
    to_end = [(s.job_ended - s.enqueued) * 1000 for s in done if s.job_ended is not None]
    return {
        "kind": kind, "sent": len(samples), "completed": len(done),
        "refused": sum(1 for s in samples if s.status not in (200, 202)),
        "failed": sum(1 for s in samples if s.ready is not None and not s.ok),
        "lost": sum(1 for s in samples if s.status in (200, 202) and s.ready is None),
        "statuses": dict(statuses), "wall_s": round(wall, 3),
        "rate": round(len(done) / wall, 1) if wall else 0.0,
        "p50_ms": p(latencies, 50), "p99_ms": p(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "rq_jobs_timed": len(runs),
        "rq_queue_wait_p50_ms": p(waits, 50),
        "rq_job_run_p50_ms": p(runs, 50), "rq_job_run_p99_ms": p(runs, 99),
        # enqueued (as above: the POST returned, or the enqueue) -> RQ's ended_at, no poll
        "to_job_end_p50_ms": p(to_end, 50), "to_job_end_p99_ms": p(to_end, 99),
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
    gateway_prefix: str            # CDEG_REDIS_PREFIX
    supply: grants.TokenSupply
    meter: CpuMeter
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    runs: int = 0

    def next_prefix(self, kind: str) -> str:
        self.runs += 1
        return f"bench-{self.tag}-{kind}{self.runs}-"


def cdi_run(bench: Bench, count: int, concurrency: int, label: str) -> dict:
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
            Watch(cdi_look(conn, grants.BANK), bench.settings.poll_ms / 1000) as watch:
        bench.meter.start()
        samples = closed_loop(work, post_jose(bench.gateway.url + "/cdi/v1/queries"), watch,
                              concurrency)
        cpu = bench.meter.stop()
        # the RQ job of each query is its outbox row's (gateway/jobs/outbox.py)
        rows = dict(conn.execute(
            "SELECT q.query_id, o.id FROM cdi_queries q JOIN outbox o "
            "ON o.idempotency_key = 'cdi.run_query:' || q.id WHERE q.query_id LIKE %s",
            (prefix + "%",)).fetchall())
    for sample in samples:
        if sample.ident in rows:
            sample.rq_job = outbox_job_id(bench.gateway_prefix, rows[sample.ident])
    add_rq_times(samples, bench.redis)
    time.sleep(SETTLE)
    result = summarise("cdi", samples, cpu, watch.polls)
    result["concurrency"] = concurrency
    say(f"  {label}: CDI {result['rate']:.1f} queries/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms" + _trouble(result))
    return result


def floor_run(bench: Bench, count: int, concurrency: int, label: str) -> dict:
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
    with Watch(floor_look(bench.redis), bench.settings.poll_ms / 1000) as watch:
        bench.meter.start()
        samples = closed_loop(work, enqueue, watch, concurrency)
        cpu = bench.meter.stop()
    for sample in samples:
        sample.rq_job = sample.ident
    add_rq_times(samples, bench.redis)
    time.sleep(SETTLE)
    result = summarise("floor", samples, cpu, watch.polls)
    result["concurrency"] = concurrency
    say(f"  {label}: floor {result['rate']:.1f} jobs/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms" + _trouble(result))
    return result


def outbox_job_id(gateway_prefix: str, outbox_id: int) -> str:
    """The RQ job id the gateway gave an outbox row (``outbox.job_id`` reads only the
    gateway's Redis prefix from its configuration)."""
    from types import SimpleNamespace

    from gateway.jobs import outbox
    return outbox.job_id(SimpleNamespace(config=SimpleNamespace(redis_prefix=gateway_prefix)),
                         outbox_id)


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
            "ratio_to_job_end_p50": ratio(cdi["to_job_end_p50_ms"], floor["to_job_end_p50_ms"]),
            "ratio_job_run_p50": ratio(cdi["rq_job_run_p50_ms"], floor["rq_job_run_p50_ms"])}


# -- the profile of one cdeg worker ---------------------------------------------------------------

# Each sample of the worker's main thread, outside the wait for a job, goes to the first part
# whose frames it holds, in that order (each marker a substring of one frame, as in
# benchmarks/profiling.py), so the parts add up to 100 %.
MAIN_THREAD_EXCLUDES = "_bootstrap (threading.py"        # the relay, sequencer, callback threads
WAITING_FOR_A_JOB = "dequeue_job_and_maintain_ttl (rq"
JOB_PARTS = [
    ("run_query: seal (gateway JWS + JWE to the FI)",
     ("run_query (", "seal (gateway/tokens/jwe.py")),
    ("run_query: live grant (prepared SELECT)", ("run_query (", "live_grant (")),
    ("run_query: connectors in-process", ("run_query (", "Router.fetch (")),
    ("run_query: requester row (SELECT) + its enc key",
     ("run_query (", "get (gateway/requester_registry.py")),
    ("run_query: requester row (SELECT) + its enc key", ("run_query (", "encryption_key (")),
    ("run_query: release txn: record_in (release + audit entry)", ("run_query (", "record_in (")),
    ("run_query: release txn: BEGIN, result UPDATE, COMMIT",
     ("run_query (", "Gateway.in_transaction (")),
    # run_query's own statements: the row read, then BEGIN, UPDATE status 'running', COMMIT
    ("run_query: the query row read + status 'running' txn", ("run_query (",)),
    # outbox._run's own: BEGIN, the lease UPDATE … RETURNING, COMMIT; after the job the same
    # for done_at
    ("outbox: lease txn + done txn (2 UPDATEs, 2 commits)", ("_run (gateway/jobs/outbox.py",)),
    ("RQ: per-job bookkeeping (prepare, results, registries, heartbeats)",
     ("execute_job (rq",)),
    ("RQ: worker loop, the rest", ("(rq/",)),
]
INCLUSIVE = [
    ("all PostgreSQL round trips (psycopg waits, commits included)", "Connection.wait (psycopg"),
    ("  of which commits", "Connection.commit (psycopg"),
    ("all Redis round trips", "(redis/"),
    ("statements through SQLAlchemy (their round trips included)", "(sqlalchemy/"),
]


def _holds(frames: list[str], markers: tuple[str, ...]) -> bool:
    """Every marker in some frame, in that order from the root."""
    at = 0
    for marker in markers:
        at = next((i for i in range(at, len(frames)) if marker in frames[i]), -1)
        if at < 0:
            return False
    return True


# The gateway's side, POST /cdi/v1/queries (its cost is not in the latency, which starts when
# the POST returned, but its CPU is taken from the same two cores): inclusive shares of the
# samples in requests, as benchmarks/profiling.py gives them.
SUBMIT_CENTRES = [
    ("Flask view POST /cdi/v1/queries", "submit (gateway/cdi/views.py"),
    ("  the FI's message verified (ES256, claims)", "verify_message (gateway/cdi/messages.py"),
    ("  requester row (SELECT)", "get (gateway/requester_registry.py"),
    ("  rate limit + jti replay guard (Redis)", "charge (gateway/rate_limits.py"),
    ("  an existing query with this query_id (SELECT)", "_existing (gateway/cdi/queries.py"),
    ("  the access token verified (cached in-process by hash)", "AccessTokenVerifier.verify ("),
    ("  live grant", "live_grant ("),
    ("  INSERT query + outbox row, COMMIT, relay", "Gateway.in_transaction ("),
    ("    relay to RQ (SELECT … FOR UPDATE, enqueue, UPDATE, COMMIT)",
     "relay_quietly (gateway/jobs/outbox.py"),
    ("      RQ enqueue", "Queue.enqueue (rq"),
    ("all SQL round trips (psycopg wait)", "Connection.wait (psycopg"),
    ("gunicorn close_graceful (waits for the client's FIN)", "close_graceful (gunicorn"),
]


def profile_worker(bench: Bench, stem: Path) -> dict:
    """One more CDI run, twice as long, at the highest load, while py-spy samples the first
    cdeg worker (and the first gunicorn worker); the worker's shares are of its main thread's
    samples outside the wait for a job."""
    out = stem.with_name(f"{stem.name}-profile-cdeg-worker.raw")
    out_gateway = stem.with_name(f"{stem.name}-profile-gunicorn-worker.raw")
    spies = [profiling.start(bench.cdeg_workers.pids()[0], out),
             profiling.start(bench.gateway.worker_pids()[0], out_gateway)]
    try:
        run = cdi_run(bench, 2 * bench.settings.queries, max(bench.settings.concurrency),
                      "profiled")
    finally:
        for spy in spies:
            profiling.finish(spy)
    stacks = profiling.read_stacks(out)
    main = [(f, n) for f, n in stacks if not any(MAIN_THREAD_EXCLUDES in x for x in f)]
    busy = [(f, n) for f, n in main if not any(WAITING_FOR_A_JOB in x for x in f)]
    total = sum(n for _, n in busy) or 1
    parts: Counter = Counter()
    for frames, n in busy:
        parts[next((label for label, markers in JOB_PARTS if _holds(frames, markers)),
                   "other")] += n
    packages: Counter = Counter(profiling.package_of(f[-1]) for f, n in busy for _ in range(n))
    background = [(f, n) for f, n in stacks if any(MAIN_THREAD_EXCLUDES in x for x in f)
                  and not any(w in f[-1] for w in ("wait (threading.py", "_read_from_socket"))]
    return {"raw": out.name, "run": run, "samples_main_thread": sum(n for _, n in main),
            "samples_busy": total,
            "parts": [{"part": label, "share": round(100 * parts[label] / total, 1)}
                      for label in dict.fromkeys([label for label, _ in JOB_PARTS] + ["other"])
                      if parts[label]],
            "inclusive": [{"part": label, "share": round(100 * sum(
                n for f, n in busy if any(marker in x for x in f)) / total, 1)}
                for label, marker in INCLUSIVE],
            "self_by_package": [{"package": p, "share": round(100 * n / total, 1)}
                                for p, n in packages.most_common(8)],
            "background_threads_busy_samples": sum(n for _, n in background),
            "gateway_submit": profiling.summarise(out_gateway, SUBMIT_CENTRES, top=8)}


# -- the report ------------------------------------------------------------------------------------

def _ms(value: float | None, width: int = 7) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def _cells(run: dict) -> str:
    return f"{run['rate']:>8.1f} {_ms(run['p50_ms'])} {_ms(run['p99_ms'])}"


def level_summary(concurrency: int, pairs: list[dict]) -> dict:
    bad = sum(p[side][k] for p in pairs for side in ("cdi", "floor")
              for k in ("refused", "failed", "lost"))

    def median_of(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    polled = median_of([p["ratio_p50"] for p in pairs])
    timed = median_of([p["ratio_to_job_end_p50"] for p in pairs])
    cpu = {side: {name: round(statistics.median(p[side]["cpu_ms_per_item"][name]
                                                for p in pairs), 2)
                  for name in pairs[0][side]["cpu_ms_per_item"]} for side in ("cdi", "floor")}
    return {"concurrency": concurrency, "pairs": pairs,
            "median_ratio_p50": polled, "median_ratio_to_job_end_p50": timed,
            "median_cdi_rate": median_of([p["cdi"]["rate"] for p in pairs]),
            "median_floor_rate": median_of([p["floor"]["rate"] for p in pairs]),
            "median_cdi_p50_ms": median_of([p["cdi"]["p50_ms"] for p in pairs]),
            "median_floor_p50_ms": median_of([p["floor"]["p50_ms"] for p in pairs]),
            "median_cpu_ms_per_item": cpu, "refused_failed_lost": bad,
            "target_ratio": TARGET_RATIO,
            "target_met": polled is not None and polled <= TARGET_RATIO and bad == 0,
            "target_met_by_rq_times": timed is not None and timed <= TARGET_RATIO and bad == 0}


def _verdict(ratio: float | None, met: bool) -> str:
    return f"{_ms(ratio, 4)} (aim ≤ {TARGET_RATIO:g}): {'MET' if met else 'MISSED'}"


def print_report(result: dict) -> None:
    poll_ms = result["settings"]["poll_ms"]
    print()
    print("CDI query (POST /cdi/v1/queries → result ready) vs RQ empty job (enqueue → done)")
    print(f"{result['settings_described']}; ready as seen by a {poll_ms:g} ms poll")
    print(f"{'':9} {'':>4}  {'CDI query':<24}  {'RQ empty job':<24}")
    print(f"{'in flight':>9} {'pair':>4}  {'q/s  p50 ms  p99 ms':>24}  "
          f"{'jobs/s  p50 ms  p99 ms':>24}  {'p50 ratio':>9}  {'p99 ratio':>9}")
    for level in result["levels"]:
        c = level["concurrency"]
        for i, p in enumerate(level["pairs"], 1):
            bad = sum(p[side][k] for side in ("cdi", "floor")
                      for k in ("refused", "failed", "lost"))
            print(f"{c:>9} {i:>4}  {_cells(p['cdi'])}  {_cells(p['floor'])}  "
                  f"{_ms(p['ratio_p50'], 9)}  {_ms(p['ratio_p99'], 9)}"
                  + (f"  !! {bad} refused, failed or lost" if bad else ""))
        print(f"{c:>9}       median p50 ratio "
              f"{_verdict(level['median_ratio_p50'], level['target_met'])}")
    print()
    print("The same runs by RQ's own timestamps (no poll): enqueued → job ended (RQ ended_at; "
          "for CDI the outbox job,")
    print("which ends after the result is ready), and its parts: queue wait (RQ enqueued_at → "
          "started_at), job run (→ ended_at)")
    print(f"{'':9} {'':>4}  {'CDI: to end':>16} {'wait':>6} {'run':>6}  "
          f"{'floor: to end':>16} {'wait':>6} {'run':>6}  {'p50 ratio':>9}")
    print(f"{'in flight':>9} {'pair':>4}  {'p50    p99':>16} {'p50':>6} {'p50':>6}  "
          f"{'p50    p99':>16} {'p50':>6} {'p50':>6}")
    for level in result["levels"]:
        for i, p in enumerate(level["pairs"], 1):
            c, f = p["cdi"], p["floor"]
            print(f"{level['concurrency']:>9} {i:>4}  "
                  f"{_ms(c['to_job_end_p50_ms'])} {_ms(c['to_job_end_p99_ms'], 8)} "
                  f"{_ms(c['rq_queue_wait_p50_ms'], 6)} {_ms(c['rq_job_run_p50_ms'], 6)}  "
                  f"{_ms(f['to_job_end_p50_ms'])} {_ms(f['to_job_end_p99_ms'], 8)} "
                  f"{_ms(f['rq_queue_wait_p50_ms'], 6)} {_ms(f['rq_job_run_p50_ms'], 6)}  "
                  f"{_ms(p['ratio_to_job_end_p50'], 9)}")
        print(f"{level['concurrency']:>9}       median p50 ratio "
              f"{_verdict(level['median_ratio_to_job_end_p50'], level['target_met_by_rq_times'])}")
    print()
    print("CPU per completed item, ms, median of the pairs (/proc, all threads of each group)")
    names = list(result["levels"][0]["median_cpu_ms_per_item"]["cdi"])
    print(f"{'in flight':>9} {'side':>5}  " + "".join(f"{n:>22}" for n in names))
    for level in result["levels"]:
        for side in ("cdi", "floor"):
            cpu = level["median_cpu_ms_per_item"][side]
            print(f"{level['concurrency']:>9} {side:>5}  "
                  + "".join(f"{cpu[n]:>22.2f}" for n in names))
    if result.get("profile"):
        prof = result["profile"]
        print()
        print(f"Profile, one cdeg worker's main thread, one more CDI run at "
              f"{prof['run']['concurrency']} in flight ({prof['run']['completed']} queries, "
              f"{prof['run']['rate']:.1f}/s, p50 {prof['run']['p50_ms']} ms; py-spy --idle, "
              f"{prof['samples_busy']} samples outside the wait for a job, of "
              f"{prof['samples_main_thread']}):")
        for part in prof["parts"]:
            print(f"  {part['share']:5.1f}%  {part['part']}")
        print("  inclusive, across the parts above:")
        for part in prof["inclusive"]:
            print(f"  {part['share']:5.1f}%  {part['part']}")
        print("  self time by package (psycopg and redis: mostly waiting on the server):")
        print("  " + ", ".join(f"{p['package']} {p['share']:.1f}%"
                               for p in prof["self_by_package"]))
        print()
        print(report.profile_lines("POST /cdi/v1/queries, one gunicorn worker, the same run",
                                   prof["gateway_submit"]))
    report.print_log_problems(result["server_log_problems"])


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
              "settings_described": settings.described,
              "rq_key_prefix": RQ_KEY_PREFIX, "warmup": {}, "levels": [],
              "server_log_problems": {}}
    began = time.monotonic()
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
        say("\n".join(servers.prepare_instance(env)))
        connection = redis.Redis.from_url(servers.REDIS_URL)
        gateway = stack.enter_context(servers.serving(servers.Gunicorn(
            "gateway", "gateway.wsgi:app", port, scratch / "gateway.log", env=env,
            workers=settings.gunicorn_workers), "/readyz"))
        cdeg_workers = stack.enter_context(servers.serving(WorkerPool(
            "cdeg worker", servers.cdeg_command() + ["worker"], settings.workers,
            prefix + GATEWAY_QUEUE, scratch / "cdeg-worker.log", env), connection))
        floor_name = prefix + "floor"
        floor_workers = stack.enter_context(servers.serving(WorkerPool(
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
                      Queue(floor_name, connection=connection), connection, dsn, prefix, supply,
                      meter)
        top = max(settings.concurrency)
        say(f"warm-up ({settings.warmup} each, {top} in flight):")
        result["warmup"] = {"cdi": cdi_run(bench, settings.warmup, top, "warm-up"),
                            "floor": floor_run(bench, settings.warmup, top, "warm-up")}
        pairs: dict[int, list[dict]] = {c: [] for c in settings.concurrency}
        for i in range(settings.pairs):
            for c in settings.concurrency:
                label = f"pair {i + 1}, {c} in flight"
                say(f"{label}:")
                cdi = cdi_run(bench, settings.queries, c, label)
                floor = floor_run(bench, settings.queries, c, label)
                pairs[c].append(pair_of(cdi, floor))
        result["levels"] = [level_summary(c, pairs[c]) for c in settings.concurrency]
        if settings.profile:
            say("profiling one cdeg worker during one more CDI run …")
            result["profile"] = profile_worker(bench, stem)
        result["server_log_problems"] = {"gateway": gateway.problems(),
                                         "cdeg worker": cdeg_workers.problems(),
                                         "rq floor worker": floor_workers.problems()}
    result["headline"] = {k: result["levels"][0][k] for k in
                          ("concurrency", "median_ratio_p50", "median_ratio_to_job_end_p50",
                           "target_ratio", "target_met", "target_met_by_rq_times")}
    result["machine_after"] = report.machine()
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    print_report(result)
    path = report.write_json(result, stem)
    print(f"\nresult written to {path.relative_to(REPO)} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
