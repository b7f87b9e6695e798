"""The RQ queue: on the real Redis in deployments, inline (run at enqueue) when embedded."""
from __future__ import annotations

from rq import Queue

QUEUE_NAME = "cdeg"


def queue_for(gw) -> Queue:
    """The gateway's queue. Inline (embedded default), a job runs in this process at enqueue,
    so it runs against ``gw`` itself — never a second runtime built from the environment."""
    if gw.config.inline_jobs:
        from gateway.jobs.runtime import use_gateway
        use_gateway(gw)
    return Queue(gw.config.redis_prefix + QUEUE_NAME, connection=gw.redis.client,
                 is_async=not gw.config.inline_jobs, default_timeout=60)
