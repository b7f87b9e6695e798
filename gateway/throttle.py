"""Rate limits (fixed windows in Redis). Over the limit: 429 with Retry-After. Redis down:
the caller gets RedisUnavailable and answers 503 — nothing is released unthrottled."""
from __future__ import annotations


class Throttled(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after


def check(gw, kind: str, ident: str, per_minute: int) -> None:
    wait = gw.redis.hit(kind, ident, per_minute, 60)
    if wait:
        raise Throttled(wait)
