"""What a benchmark run starts, and always stops again: a fresh PostgreSQL database, its own
Redis key prefix and instance folder, and gunicorn serving the gateway, the bare hello and the
mock department services."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import requests

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_URL = "redis://127.0.0.1:6379/0"
PROBLEM_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING", "Exception", "Error:")


class ServerFailed(Exception):
    """A server did not start, or a setup command failed; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the backing services: a database, a Redis prefix, an instance folder -------------------

@contextmanager
def fresh_database():
    """CREATE DATABASE cdeg_bench_<random>; answer its SQLAlchemy URL; DROP it afterwards."""
    name = "cdeg_bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(name=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_prefix():
    prefix = f"cdeg-bench-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)


@contextmanager
def scratch_dir():
    path = Path(tempfile.mkdtemp(prefix="cdeg-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- the gateway's configuration and its one-off commands -----------------------------------

def gateway_env(*, database_url: str, prefix: str, instance_dir: Path, port: int,
                departments_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEG_")}
    env.update(CDEG_DATABASE_URL=database_url, CDEG_REDIS_URL=REDIS_URL,
               CDEG_REDIS_PREFIX=prefix, CDEG_INSTANCE_DIR=str(instance_dir),
               CDEG_ISSUER=f"http://127.0.0.1:{port}")
    if departments_url:
        env["CDEG_DEPARTMENTS_URL"] = departments_url
    return env


def cdeg_command() -> list[str]:
    found = shutil.which("cdeg")
    return [found] if found else [sys.executable, "-m", "gateway.cli"]


def prepare_instance(env: dict, build: Path = REPO) -> list[str]:
    """``cdeg db upgrade`` then ``cdeg seed --demo``; also creates the instance's secret and
    signing key before any gunicorn worker starts. Answers what the commands printed. With
    ``build`` (another checkout), that checkout's code does it."""
    said = []
    command = cdeg_command() if build == REPO else [sys.executable, "-m", "gateway.cli"]
    if build != REPO:
        env = {**env, "PYTHONPATH": str(build)}
    for args in (["db", "upgrade"], ["seed", "--demo"]):
        done = subprocess.run(command + args, cwd=build, env=env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise ServerFailed(f"cdeg {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        said.append(done.stdout.strip())
    return said


# -- gunicorn ----------------------------------------------------------------------------------

@dataclass
class Gunicorn:
    """One gunicorn master (sync workers unless ``extra_args`` say otherwise)."""

    name: str
    app: str
    port: int
    log_path: Path
    env: dict = field(default_factory=lambda: dict(os.environ))
    workers: int = 2
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    cwd: Path = REPO                    # the build served (benchmarks/compare.py: a worktree)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-w", str(self.workers),
                "-b", f"127.0.0.1:{self.port}", "--no-control-socket", *self.extra_args,
                self.app]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200 \
                        and len(self.worker_pids()) >= self.workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise ServerFailed(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return [int(c) for c in children]

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def problems(self) -> list[str]:
        return log_problems(self.log_path)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def log_problems(path: Path) -> list[str]:
    """Log lines that report errors or warnings (worker exits, tracebacks, 5xx causes)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if any(m in line for m in PROBLEM_MARKERS)]


@contextmanager
def serving(server, *ready):
    """``server`` started, ready (``server.wait_ready(*ready)``: a gunicorn's path, a worker
    pool's Redis connection), and stopped afterwards; its log's end is printed if it failed."""
    server.start()
    try:
        server.wait_ready(*ready)
        yield server
    except Exception:
        print(f"--- {server.name}: end of its log ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
