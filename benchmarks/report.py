"""Pairs, ratios and medians; the printed table and the JSON result."""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from .load import Run

RESULTS = Path(__file__).with_name("results")
DATA_TARGET_RATIO = 0.30
DATA_TARGET_P99_MS = 25.0
EXCHANGE_TARGET_RATIO = 0.08


def pair(measured: Run, hello: Run) -> dict:
    return {"measured": measured.as_dict(), "hello": hello.as_dict(),
            "ratio": round(measured.rps / hello.rps, 4) if hello.rps else None}


def summary(pairs: list[dict], target_ratio: float, p99_limit_ms: float | None = None) -> dict:
    ratios = [p["ratio"] for p in pairs if p["ratio"] is not None]
    p99s = [p["measured"]["p99_ms"] for p in pairs]
    failures = sum(p["measured"]["failures"] + p["hello"]["failures"] for p in pairs)
    median_ratio = round(statistics.median(ratios), 4) if ratios else None
    median_p99 = round(statistics.median(p99s), 2) if p99s else None
    met = median_ratio is not None and median_ratio >= target_ratio and failures == 0
    if p99_limit_ms is not None:
        met = met and median_p99 is not None and median_p99 < p99_limit_ms
    return {"pairs": pairs, "median_ratio": median_ratio,
            "median_p50_ms": round(statistics.median(p["measured"]["p50_ms"] for p in pairs), 2),
            "median_p99_ms": median_p99,
            "median_rps": round(statistics.median(p["measured"]["rps"] for p in pairs), 1),
            "median_hello_rps": round(statistics.median(p["hello"]["rps"] for p in pairs), 1),
            "failures": failures, "target_ratio": target_ratio, "target_p99_ms": p99_limit_ms,
            "target_met": met}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def git_state() -> dict:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=RESULTS.parent.parent, capture_output=True,
                              text=True)
        return done.stdout.strip()
    diff = git("diff", "HEAD", "--", "gateway", "connectors", "policies", "schemas")
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_files": len(git("status", "--porcelain").splitlines()),
            # the code measured, when the working tree differs from the commit
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None}


def result_stem() -> Path:
    """benchmarks/results/bench-<time>: the JSON result and the raw profiles start with it."""
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / time.strftime("bench-%Y%m%d-%H%M%S")


def write_json(result: dict, stem: Path) -> Path:
    path = stem.with_suffix(".json")
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path


# -- the printed table ---------------------------------------------------------------------------

def _run_cells(run: dict) -> str:
    return f"{run['rps']:>8.1f} {run['p50_ms']:>7.2f} {run['p99_ms']:>7.2f}"


def _failed(p: dict) -> str:
    failed = p["measured"]["failures"] + p["hello"]["failures"]
    return f"  !! {failed} not 2xx or socket errors" if failed else ""


def _verdict(block: dict) -> str:
    wanted = f"≥ {block['target_ratio']:.2f}"
    if block["target_p99_ms"] is not None:
        wanted += f", p99 < {block['target_p99_ms']:.0f} ms"
    return (f"median ratio {block['median_ratio']:.3f}, median p99 {block['median_p99_ms']:.1f} ms "
            f"(target {wanted}): {'MET' if block['target_met'] else 'MISSED'}")


def table(title: str, measured_label: str, blocks: dict[str, dict]) -> str:
    lines = [title,
             f"{'':12} {'':>4}  {measured_label:<24}  {'hello':<24}",
             f"{'':12} {'pair':>4}  {'rate/s  p50 ms  p99 ms':>24}  {'req/s  p50 ms  p99 ms':>24}"
             f"   ratio"]
    for name, block in blocks.items():
        for i, p in enumerate(block["pairs"], 1):
            lines.append(f"{name:12} {i:>4}  {_run_cells(p['measured'])}  {_run_cells(p['hello'])}"
                         f"   {p['ratio']:.3f}{_failed(p)}")
        lines.append(f"{name:12} {'':>4}  {_verdict(block)}")
    return "\n".join(lines)


def profile_lines(name: str, profile: dict) -> str:
    lines = [f"Profile, one gateway worker, {name} ({profile['samples']} wall-clock samples "
             f"in requests):"]
    lines += [f"  {c['share']:5.1f}%  {c['centre']}" for c in profile["centres"]]
    lines.append("  self time by package (psycopg/redis include waiting on the server):")
    lines += [f"  {p['share']:5.1f}%  {p['package']}" for p in profile["self_by_package"]]
    lines.append("  where the samples landed (self):")
    lines += [f"  {s['share']:5.1f}%  {s['frame']}" for s in profile["self_top"]]
    return "\n".join(lines)


def print_log_problems(problems: dict[str, list[str]]) -> None:
    """Each server's log lines that reported errors or warnings (the first ten)."""
    for name, lines in problems.items():
        if lines:
            print(f"\n{name} log reported {len(lines)} problem line(s), first ones:")
            print("\n".join("  " + line for line in lines[:10]))
