"""Rate limits: the one entry point for every limit the gateway keeps (fixed windows in Redis).

    charge(gw, "client" | "oauth" | "login", ident)   one request against a per-minute limit
                                                       named in the settings (``Config``)
    charge(gw, kind, ident, limit=n, window=s)         any other counted limit (a pending
                                                       login's code checks)
    reserve(gw, budgets) / give_back(gw, keys)         budgets of *failures* (wrong login codes)

Over a limit: ``Throttled`` (429 with Retry-After). Redis down: ``StoreUnavailable`` (503) —
nothing is released, minted or compared unthrottled.

The data API's per-requester limit is counted in leases (``Leases``): a process that sees one
requester call in a sustained burst takes several calls' worth from Redis in one round trip and
spends them locally for at most ``client_rate_lease_ms`` (50 ms). Redis still counts every call
before it is made, so the limit is never exceeded however many processes lease; a lease left
unspent when it lapses is simply lost (the requester may be refused a little early near its
limit). While Redis is down a lease already taken is spent until it lapses — so the data API
fails closed within those 50 ms, not at the very next call, and only under a sustained burst
(``client_rate_lease_max = 1`` turns leases off). A limit under 50 per window is never leased. A failure budget's unit is reserved before
the thing it guards is tried, atomically, so parallel requests cannot pass the budget, and given
back when the try turns out not to be a failure.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from gateway.errors import Throttled

PER_MINUTE = {"client": "client_rate_per_minute",    # data API calls per requester
              "oauth": "oauth_rate_per_minute",      # PAR, token, revoke, introspect per requester
              "login": "login_rate_per_minute",      # login starts and code posts per address
              "cdi": "cdi_rate_per_minute"}          # CDI queries and polls per FI


def charge(gw, kind: str, ident: str, *, limit: int | None = None, window: int = 60,
           replay_guard: tuple[str, str, int] | None = None) -> bool:
    """Count one request; raise Throttled when over the limit. With ``replay_guard`` =
    ``(kind, ident, ttl)`` also remember that ident in the same Redis round trip, and answer
    whether it was fresh (a replay is answered False before any Throttled: it is refused as a
    replay whatever the rate)."""
    if limit is None:
        limit = getattr(gw.config, PER_MINUTE[kind])
        if kind == "client" and replay_guard is None:
            gw.rate_leases.spend(gw, kind, ident, limit, window)
            return True
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


class Leases:
    """Calls taken from Redis ahead of time, per limit and ident, in this process.

    A lease is taken with one Redis round trip and spent by the calls that follow within its
    life. Its size starts at 1 and doubles (up to ``most``, and never beyond 2 % of the limit)
    only once leases have run out within their life three times in a row — a sustained burst;
    a lease that lapses unspent halves the next one, a pause resets it to 1. Redis grants at
    most what is left in the window."""

    BURST = 3

    @dataclass
    class Held:
        units: int          # calls left to spend
        taken: float        # monotonic time taken
        lapses: float       # monotonic time it may no longer be spent
        size: int
        streak: int

    def __init__(self, most: int, life_ms: int):
        self.most, self.life = most, life_ms / 1000.0
        self._held: dict[tuple[str, str], Leases.Held] = {}
        self._lock = threading.Lock()

    def spend(self, gw, kind: str, ident: str, limit: int, window: int) -> None:
        now = time.monotonic()
        with self._lock:
            held = self._held.get((kind, ident))
            if held is not None and held.units > 0 and now < held.lapses:
                held.units -= 1
                return
            size, streak = self._next(held, now, limit)
        count, left_ms = gw.redis.take(kind, ident, size, window)
        granted = min(size, limit - (count - size))
        if granted <= 0:
            raise Throttled(max(1, -(-left_ms // 1000)))
        with self._lock:
            if len(self._held) > 10_000:   # idents not seen for a while
                for key in [k for k, h in self._held.items() if h.lapses <= now]:
                    del self._held[key]
            self._held[(kind, ident)] = Leases.Held(
                granted - 1, now, now + min(self.life, left_ms / 1000.0), size, streak)

    def _next(self, held: Held | None, now: float, limit: int) -> tuple[int, int]:
        """The next lease's size, and the burst streak it continues."""
        if held is None:
            return 1, 0
        if held.units > 0:                         # lapsed unspent
            return max(1, held.size // 2), 0
        if now - held.taken > self.life:           # spent, then a pause
            return 1, 0
        streak = held.streak + 1
        if streak < self.BURST:
            return held.size, streak
        return min(self.most, held.size * 2, max(1, limit // 50)), streak
