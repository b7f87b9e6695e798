"""The RQ queue on the real Redis (deployments). The embedded default has no queue: its jobs
run inline, after commit, through ``gateway/jobs/outbox.py``."""
from __future__ import annotations

from rq import Queue

QUEUE_NAME = "cdeg"


def queue_for(gw) -> Queue:
    if gw.config.inline_jobs:
        raise RuntimeError("jobs run inline in this gateway; there is no queue to put them on")
    return Queue(gw.config.redis_prefix + QUEUE_NAME, connection=gw.redis.client,
                 default_timeout=60)
