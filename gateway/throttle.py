"""Rate limits (fixed windows in Redis). Over the limit: 429 with Retry-After. Redis down:
the caller gets RedisUnavailable and answers 503 — nothing is released unthrottled.

``check`` counts requests. ``reserve`` and ``give_back`` keep budgets of *failures* (wrong
login codes): a unit is reserved before the thing it guards is tried, atomically, so parallel
requests cannot pass the budget, and given back when the try turns out not to be a failure.
"""
from __future__ import annotations

import redis as redis_lib

from gateway.store.redis import RedisUnavailable


class Throttled(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after


def check(gw, kind: str, ident: str, per_minute: int) -> None:
    wait = gw.redis.hit(kind, ident, per_minute, 60)
    if wait:
        raise Throttled(wait)


def reserve(gw, budgets: list[tuple[str, str, int, int]]) -> list[str]:
    """Take one unit from every budget ``(kind, ident, limit, window seconds)`` at once.

    Windows are fixed and aligned on the gateway clock (so tests can move it). Answers what to
    hand to ``give_back``; raises Throttled, keeping nothing, when any budget is spent. A
    budget's count is units reserved minus units given back, read in the same MULTI as the
    reservation itself, so at most ``limit`` units are ever kept per window."""
    now = gw.clock.now()
    keys, ends = [], []
    for kind, ident, _limit, window in budgets:
        keys.append(gw.redis.key("budget", kind, ident, str(now // window)))
        ends.append((now // window + 1) * window)
    try:
        pipe = gw.redis.client.pipeline(transaction=True)
        for key, end in zip(keys, ends):
            pipe.hincrby(key, "taken", 1)
            pipe.hget(key, "back")
            pipe.expire(key, max(1, end - now) + 60)
        replies = pipe.execute()
    except redis_lib.RedisError as exc:
        raise RedisUnavailable("redis did not answer") from exc
    wait = 0
    for i, (_kind, _ident, limit, _window) in enumerate(budgets):
        taken, back = replies[3 * i], int(replies[3 * i + 1] or 0)
        if taken - back > limit:
            wait = max(wait, ends[i] - now)
    if wait:
        give_back(gw, keys)
        raise Throttled(max(1, wait))
    return keys


def give_back(gw, keys: list[str]) -> None:
    """Return the units ``reserve`` took (the try was not a failure)."""
    try:
        pipe = gw.redis.client.pipeline(transaction=True)
        for key in keys:
            pipe.hincrby(key, "back", 1)
            pipe.expire(key, 60, nx=True)  # only if its window ended meanwhile: no stray key
        pipe.execute()
    except redis_lib.RedisError as exc:
        raise RedisUnavailable("redis did not answer") from exc
