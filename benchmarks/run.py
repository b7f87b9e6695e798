"""CDEG benchmark: the gateway against a bare Flask hello, side by side, under the same
gunicorn settings (``-w 2`` sync workers unless ``--workers``) and the same load (wrk, 16 connections).

    python benchmarks/run.py [--duration 10] [--pairs 3] [--quick] [--profile]

It creates a fresh PostgreSQL database, a Redis key prefix and an instance folder, runs
``cdeg db upgrade`` and ``cdeg seed --demo``, starts the servers, measures in alternation
(gateway, hello, gateway, hello …) and removes everything again. Figures:

1. GET /api/v1/data with connectors in-process, vs hello;
2. POST /oauth/token (authorization code + PKCE + private_key_jwt), vs hello;
3. GET /api/v1/data with the mock departments over HTTP (their own gunicorn), vs hello.

A table is printed and the JSON result written to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import grants, load, profiling, report, servers  # noqa: E402

CODE_TTL_MARGIN = 45.0   # codes live 60 s: exchange a batch before its oldest is this old


@dataclass(frozen=True)
class Settings:
    duration: float
    pairs: int
    tokens: int
    exchange_batch: int
    warmup: float
    profile: bool
    connections: int = 16
    wrk_threads: int = 2
    exchange_workers: int = 16
    workers: int = 2                   # gunicorn sync workers, the same for hello and gateway

    @property
    def gunicorn(self) -> str:
        return f"gunicorn -w {self.workers} (sync workers)"


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per figure")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 s runs, 2 pairs, small batches")
    parser.add_argument("--profile", action="store_true",
                        help="also sample one gateway worker with py-spy (pip install py-spy)")
    parser.add_argument("--tokens", type=int, default=8,
                        help="access tokens (distinct consents) wrk rotates among")
    parser.add_argument("--exchange-batch", type=int, default=200,
                        help="authorization codes exchanged per timed batch")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn sync workers, for hello and the gateway alike")
    args = parser.parse_args(argv)
    if args.quick:
        return Settings(duration=3.0, pairs=2, tokens=4, exchange_batch=60, warmup=1.0,
                        profile=args.profile, workers=args.workers)
    return Settings(duration=args.duration, pairs=args.pairs, tokens=args.tokens,
                    exchange_batch=args.exchange_batch, warmup=2.0, profile=args.profile,
                    workers=args.workers)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What every measurement shares: settings, backing services, the hello baseline."""

    settings: Settings
    scratch: Path
    database_url: str
    prefix: str
    gateway_port: int
    hello: servers.Gunicorn
    tokens_file: Path
    results_stem: Path

    def profile_path(self, name: str) -> Path:
        return self.results_stem.with_name(
            f"{self.results_stem.name}-profile-{name.replace(' ', '-')}.raw")

    def gateway_env(self, departments_url: str | None = None) -> dict:
        return servers.gateway_env(database_url=self.database_url, prefix=self.prefix,
                                   instance_dir=self.scratch / "instance",
                                   port=self.gateway_port, departments_url=departments_url)

    def gateway(self, label: str, departments_url: str | None = None) -> servers.Gunicorn:
        return servers.Gunicorn(f"gateway ({label})", "gateway.wsgi:app", self.gateway_port,
                                self.scratch / f"gateway-{label.replace(' ', '-')}.log",
                                env=self.gateway_env(departments_url),
                                workers=self.settings.workers)

    def wrk(self, target: str, url: str, duration: float | None = None) -> load.Run:
        return load.wrk(target, url, self.tokens_file, connections=self.settings.connections,
                        duration=duration or self.settings.duration,
                        threads=self.settings.wrk_threads)

    def hello_run(self) -> load.Run:
        return self.wrk("hello", self.hello.url + "/")


# -- the figures -----------------------------------------------------------------------------------

def data_url(gateway: servers.Gunicorn) -> str:
    return gateway.url + "/api/v1/data"


def measure_data(bench: Bench, gateway: servers.Gunicorn, label: str,
                 supply: grants.TokenSupply) -> dict:
    """GET /api/v1/data vs hello, alternating, ``pairs`` times."""
    supply.fresh()
    bench.wrk("warm-up", data_url(gateway), bench.settings.warmup)
    bench.wrk("warm-up", bench.hello.url + "/", bench.settings.warmup)
    pairs = []
    for i in range(bench.settings.pairs):
        supply.fresh()
        measured = bench.wrk("gateway data", data_url(gateway))
        hello = bench.hello_run()
        pairs.append(report.pair(measured, hello))
        say(f"  data ({label}) pair {i + 1}: {measured.rps:.0f} vs {hello.rps:.0f} req/s "
            f"= {pairs[-1]['ratio']:.3f}; p50 {measured.p50_ms:.1f} ms, p99 {measured.p99_ms:.1f} ms"
            + (f"; {measured.failures} FAILED" if measured.failures else ""))
    return report.summary(pairs, report.DATA_TARGET_RATIO, report.DATA_TARGET_P99_MS)


def prepared_exchanges(bench: Bench, minter: grants.CodeMinter) -> list[dict]:
    codes = minter.batch(bench.settings.exchange_batch)
    forms = minter.exchange_forms(codes)
    oldest = time.monotonic() - min(code.approved_at for code in codes)
    if oldest > CODE_TTL_MARGIN:
        raise RuntimeError(f"making {len(codes)} codes took {oldest:.0f} s; they live 60 s. "
                           f"Use a smaller --exchange-batch.")
    return forms


def measure_exchange(bench: Bench, gateway: servers.Gunicorn, minter: grants.CodeMinter) -> dict:
    """POST /oauth/token for a batch of fresh codes vs hello, alternating."""
    pairs = []
    for i in range(bench.settings.pairs):
        forms = prepared_exchanges(bench, minter)
        measured = load.exchange_batch(gateway.url + "/oauth/token", forms,
                                       workers=bench.settings.exchange_workers)
        hello = bench.hello_run()
        pairs.append(report.pair(measured, hello))
        say(f"  token exchange pair {i + 1}: {measured.rps:.0f}/s vs {hello.rps:.0f} req/s "
            f"= {pairs[-1]['ratio']:.3f}" + (f"; statuses {measured.statuses}"
                                             if measured.failures else ""))
    return report.summary(pairs, report.EXCHANGE_TARGET_RATIO)


def profile_data(bench: Bench, gateway: servers.Gunicorn, label: str) -> dict:
    out = bench.profile_path(f"data {label}")
    spy = profiling.start(gateway.worker_pids()[0], out)
    try:
        bench.wrk("profiled", data_url(gateway))
    finally:
        profiling.finish(spy)
    return profiling.summarise(out, profiling.DATA_CENTRES)


def profile_exchange(bench: Bench, gateway: servers.Gunicorn, minter: grants.CodeMinter) -> dict:
    out = bench.profile_path("token exchange")
    forms = prepared_exchanges(bench, minter)
    spy = profiling.start(gateway.worker_pids()[0], out)
    try:
        load.exchange_batch(gateway.url + "/oauth/token", forms,
                            workers=bench.settings.exchange_workers)
    finally:
        profiling.finish(spy)
    return profiling.summarise(out, profiling.EXCHANGE_CENTRES)


# -- the phases ------------------------------------------------------------------------------------

def in_process_phase(bench: Bench, result: dict) -> None:
    gateway = bench.gateway("in-process")
    supply = grants.TokenSupply(gateway.url, bench.settings.tokens, bench.tokens_file)
    with servers.serving(gateway, "/readyz"):
        say("data API, connectors in-process:")
        result["data_api"]["in-process"] = measure_data(bench, gateway, "in-process", supply)
        say(f"token exchange, batches of {bench.settings.exchange_batch}, "
            f"{bench.settings.exchange_workers} at a time:")
        minter = grants.CodeMinter(gateway.url)
        result["token_exchange"] = measure_exchange(bench, gateway, minter)
        if bench.settings.profile:
            say("profiling one worker (data in-process, token exchange) …")
            result["profiles"]["data in-process"] = profile_data(bench, gateway, "in-process")
            result["profiles"]["token exchange"] = profile_exchange(bench, gateway, minter)
    result["server_log_problems"][gateway.name] = gateway.problems()


def over_http_phase(bench: Bench, result: dict) -> None:
    departments = servers.Gunicorn(
        "departments", "connectors.mock.departments:create_app()", servers.free_port(),
        bench.scratch / "departments.log",
        extra_args=("-k", "gthread", "--threads", "4", "--keep-alive", "5"))
    with servers.serving(departments, "/healthz"):
        gateway = bench.gateway("over HTTP", departments.url)
        supply = grants.TokenSupply(gateway.url, bench.settings.tokens, bench.tokens_file)
        with servers.serving(gateway, "/readyz"):
            say(f"data API, departments over HTTP at {departments.url}:")
            result["data_api"]["over HTTP"] = measure_data(bench, gateway, "over HTTP", supply)
            if bench.settings.profile:
                say("profiling one worker (data over HTTP) …")
                result["profiles"]["data over HTTP"] = profile_data(bench, gateway, "over HTTP")
        result["server_log_problems"][gateway.name] = gateway.problems()
    result["server_log_problems"][departments.name] = departments.problems()


def print_report(result: dict) -> None:
    s = result["settings"]
    print()
    print(report.table(f"GET /api/v1/data vs GET hello — {s['connections']} connections, "
                       f"{s['duration']:g} s per run, {s['gunicorn']}, wrk -t{s['wrk_threads']}",
                       "gateway", result["data_api"]))
    print()
    print(report.table(f"POST /oauth/token (code + PKCE + private_key_jwt), batches of "
                       f"{s['exchange_batch']}, {s['exchange_workers']} at a time, vs GET hello",
                       "exchange", {"exchange": result["token_exchange"]}))
    for name, profile in result["profiles"].items():
        print()
        print(report.profile_lines(name, profile))
    report.print_log_problems(result["server_log_problems"])


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.profile and not profiling.available():
        say("--profile needs py-spy (pip install py-spy)")
        return 2
    stem = report.result_stem()
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": report.git_state(),
              "machine_before": report.machine(), "settings": {**asdict(settings), "gunicorn": settings.gunicorn},
              "data_api": {}, "token_exchange": {}, "profiles": {}, "server_log_problems": {}}
    with ExitStack() as stack:
        scratch = stack.enter_context(servers.scratch_dir())
        database_url = stack.enter_context(servers.fresh_database())
        prefix = stack.enter_context(servers.redis_prefix())
        gateway_port = servers.free_port()
        env = servers.gateway_env(database_url=database_url, prefix=prefix,
                                  instance_dir=scratch / "instance", port=gateway_port)
        say("\n".join(servers.prepare_instance(env)))
        hello = stack.enter_context(servers.serving(servers.Gunicorn(
            "hello", "benchmarks.hello_app:app", servers.free_port(), scratch / "hello.log",
            workers=settings.workers), "/"))
        tokens_file = scratch / "tokens.txt"
        tokens_file.write_text("placeholder\n")
        bench = Bench(settings, scratch, database_url, prefix, gateway_port, hello, tokens_file,
                      stem)
        in_process_phase(bench, result)
        over_http_phase(bench, result)
        result["server_log_problems"]["hello"] = hello.problems()
    result["machine_after"] = report.machine()
    print_report(result)
    path = report.write_json(result, stem)
    print(f"\nresult written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
