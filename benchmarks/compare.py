"""Two builds of the gateway side by side in one run: the working tree against a git ref (a
worktree of it), each under the same gunicorn settings on its own fresh database, Redis prefix
and instance folder, with a bare Flask hello beside them — wrk in rotation A B hello, A B
hello … — so what a change costs the data call is read as a ratio within the same minute.

    python benchmarks/compare.py --baseline <git ref> [--duration 5] [--pairs 3] [--workers 2]

Prints, per round, each build's rate, p50, p99 and ratio to hello, and the ratio of the two
builds; the median of each. Everything it made is removed again (worktree included).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import grants, load, servers  # noqa: E402


@contextmanager
def worktree(ref: str):
    path = Path(tempfile.mkdtemp(prefix="cdeg-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path),
                    ref], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                       capture_output=True)


def serve(stack: ExitStack, name: str, build: Path, scratch: Path, workers: int):
    database = stack.enter_context(servers.fresh_database())
    prefix = stack.enter_context(servers.redis_prefix())
    port = servers.free_port()
    env = servers.gateway_env(database_url=database, prefix=prefix,
                              instance_dir=scratch / f"instance-{name}", port=port)
    if build != REPO:
        env["PYTHONPATH"] = str(build)
    servers.prepare_instance(env, build)
    gateway = servers.Gunicorn(name, "gateway.wsgi:app", port, scratch / f"{name}.log",
                               env=env, workers=workers, cwd=build)
    stack.enter_context(servers.serving(gateway, "/readyz"))
    return gateway


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the git ref to compare against")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        scratch = stack.enter_context(servers.scratch_dir())
        base = stack.enter_context(worktree(args.baseline))
        builds = {"working tree": serve(stack, "current", REPO, scratch, args.workers),
                  args.baseline: serve(stack, "baseline", base, scratch, args.workers)}
        hello = stack.enter_context(servers.serving(servers.Gunicorn(
            "hello", "benchmarks.hello_app:app", servers.free_port(), scratch / "hello.log",
            workers=args.workers), "/"))
        supplies = {name: grants.TokenSupply(g.url, 8, scratch / f"tokens-{i}.txt")
                    for i, (name, g) in enumerate(builds.items())}
        for name, g in builds.items():           # warm up
            supplies[name].fresh()
            load.wrk("warm", g.url + "/api/v1/data", supplies[name].path, connections=16,
                     duration=1.0)
        rounds = []
        for i in range(args.pairs):
            runs = {}
            for name, g in builds.items():
                supplies[name].fresh()
                runs[name] = load.wrk(name, g.url + "/api/v1/data", supplies[name].path,
                                      connections=16, duration=args.duration)
            runs["hello"] = load.wrk("hello", hello.url + "/", supplies["working tree"].path,
                                     connections=16, duration=args.duration)
            rounds.append(runs)
            line = "  ".join(f"{n}: {r.rps:7.1f}/s p50 {r.p50_ms:5.1f} p99 {r.p99_ms:5.1f}"
                             for n, r in runs.items())
            print(f"round {i + 1}: {line}", flush=True)
    names = list(builds)
    print()
    for name in names:
        ratios = [r[name].rps / r["hello"].rps for r in rounds]
        print(f"{name:>14}: ratio to hello median {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f})")
    between = [r[names[0]].rps / r[names[1]].rps for r in rounds]
    print(f"{'working/base':>14}: median {statistics.median(between):.3f} "
          f"({min(between):.3f}-{max(between):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
