"""RQ's own floor, for ``benchmarks/cdi.py``: a job that does nothing, and a worker process
that runs such jobs with RQ's ``SimpleWorker`` exactly as ``cdeg worker`` runs its queue
(``gateway/jobs/worker.py``: default options, no fork per job), with nothing of the gateway
around it. What an empty job costs from enqueue to done is what RQ itself costs.

    python -m benchmarks.rq_floor QUEUE [--redis-url redis://127.0.0.1:6379/0]

Run it from the repository root (the job is found as ``benchmarks.rq_floor.noop``). Its keys
follow ``RQ_KEY_PREFIX`` from the environment, as every RQ process's do.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def noop() -> None:
    """The empty job."""
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an RQ SimpleWorker on one queue.")
    parser.add_argument("queue", help="the queue's name")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    from redis import Redis            # imported here: RQ reads RQ_KEY_PREFIX when imported
    from rq import Queue, SimpleWorker
    connection = Redis.from_url(args.redis_url)
    SimpleWorker([Queue(args.queue, connection=connection)], connection=connection).work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
