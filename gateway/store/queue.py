"""The RQ queue: on the real Redis in deployments, inline (run at enqueue) when embedded."""
from __future__ import annotations

from rq import Queue

QUEUE_NAME = "cdeg"


def queue_for(gw) -> Queue:
    return Queue(gw.config.redis_prefix + QUEUE_NAME, connection=gw.redis.client,
                 is_async=not gw.config.inline_jobs, default_timeout=60)
