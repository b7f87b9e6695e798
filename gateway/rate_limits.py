"""Rate limits: the one entry point for every limit the gateway keeps (fixed windows in Redis).

    charge(gw, "client" | "oauth" | "login", ident)   one request against a per-minute limit
                                                       named in the settings (``Config``)
    charge(gw, kind, ident, limit=n, window=s)         any other counted limit (a pending
                                                       login's code checks)
    reserve(gw, budgets) / give_back(gw, keys)         budgets of *failures* (wrong login codes)

Over a limit: ``Throttled`` (429 with Retry-After). Redis down: ``StoreUnavailable`` (503) —
nothing is released, minted or compared unthrottled. A failure budget's unit is reserved before
the thing it guards is tried, atomically, so parallel requests cannot pass the budget, and given
back when the try turns out not to be a failure.
"""
from __future__ import annotations

from gateway.errors import Throttled

PER_MINUTE = {"client": "client_rate_per_minute",    # data API calls per requester
              "oauth": "oauth_rate_per_minute",      # PAR, token, revoke, introspect per requester
              "login": "login_rate_per_minute"}      # login starts and code posts per address


def charge(gw, kind: str, ident: str, *, limit: int | None = None, window: int = 60,
           replay_guard: tuple[str, str, int] | None = None) -> bool:
    """Count one request; raise Throttled when over the limit. With ``replay_guard`` =
    ``(kind, ident, ttl)`` also remember that ident in the same Redis round trip, and answer
    whether it was fresh (a replay is answered False before any Throttled: it is refused as a
    replay whatever the rate)."""
    if limit is None:
        limit = getattr(gw.config, PER_MINUTE[kind])
    if replay_guard is None:
        wait = gw.redis.hit(kind, ident, limit, window)
        fresh = True
    else:
        fresh, wait = gw.redis.claim_once_and_hit(*replay_guard, kind, ident, limit, window)
        if not fresh:
            return False
    if wait:
        raise Throttled(wait)
    return fresh


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
    counts = gw.redis.take_units(keys, [max(1, end - now) + 60 for end in ends])
    wait = max((end - now for (_k, _i, limit, _w), end, count in zip(budgets, ends, counts)
                if count > limit), default=0)
    if wait:
        give_back(gw, keys)
        raise Throttled(max(1, wait))
    return keys


def give_back(gw, keys: list[str]) -> None:
    """Return the units ``reserve`` took (the try was not a failure)."""
    gw.redis.return_units(keys)
