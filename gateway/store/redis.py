"""Redis: the real server in deployments, an in-process stand-in (fakeredis) embedded.

Redis holds only what may be lost: replay guards, sessions, rate counters and job queues.
Every key goes through ``key()`` so a test run (or a second gateway) can use its own prefix.
"""
from __future__ import annotations

import redis as redis_lib

from gateway.errors import StoreUnavailable


class RedisStore:
    def __init__(self, url: str | None, prefix: str):
        self.prefix = prefix
        if url:
            self.client = redis_lib.Redis.from_url(
                url, socket_connect_timeout=1.0, socket_timeout=1.0,
                health_check_interval=30, retry_on_timeout=False)
        else:
            import fakeredis
            self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.embedded = url is None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def claim_once_and_hit(self, kind: str, ident: str, ttl_seconds: int, rate_kind: str,
                           rate_ident: str, limit: int, window: int) -> tuple[bool, int]:
        """Remember ``ident`` until it could no longer be used (a replay guard) and count one
        request against a rate limit, in one round trip: (fresh, seconds to wait or 0)."""
        rate_key = self.key("rate", rate_kind, rate_ident)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key("seen", kind, ident), b"1", nx=True, ex=max(1, int(ttl_seconds)))
            pipe.incr(rate_key)
            pipe.expire(rate_key, window, nx=True)
            pipe.ttl(rate_key)
            fresh, count, _, ttl = pipe.execute()
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("redis did not answer") from exc
        return bool(fresh), 0 if count <= limit else max(1, int(ttl))

    def hit(self, kind: str, ident: str, limit: int, window: int) -> int:
        """Count one request in a fixed window; answer 0 when allowed, else seconds to wait.

        One round trip (INCR and EXPIRE NX in a pipeline)."""
        key = self.key("rate", kind, ident)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            count, _ = pipe.execute()
            if count <= limit:
                return 0
            return max(1, int(self.client.ttl(key)))
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("redis did not answer") from exc

    def take(self, kind: str, ident: str, units: int, window: int) -> tuple[int, int]:
        """Count ``units`` requests at once in a fixed window, in one round trip: (the window's
        count including them, milliseconds until the window ends)."""
        key = self.key("rate", kind, ident)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incrby(key, units)
            pipe.expire(key, window, nx=True)
            pipe.pttl(key)
            count, _, left_ms = pipe.execute()
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("redis did not answer") from exc
        return count, max(0, left_ms)

    def take_units(self, keys: list[str], ttls: list[int]) -> list[int]:
        """One unit from each budget hash, in one MULTI: answer each budget's units kept
        (taken minus given back) including this one."""
        try:
            pipe = self.client.pipeline(transaction=True)
            for key, ttl in zip(keys, ttls):
                pipe.hincrby(key, "taken", 1)
                pipe.hget(key, "back")
                pipe.expire(key, ttl)
            replies = pipe.execute()
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("redis did not answer") from exc
        return [replies[3 * i] - int(replies[3 * i + 1] or 0) for i in range(len(keys))]

    def return_units(self, keys: list[str]) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            for key in keys:
                pipe.hincrby(key, "back", 1)
                pipe.expire(key, 60, nx=True)  # only if its window ended meanwhile: no stray key
            pipe.execute()
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("redis did not answer") from exc

    def session_get(self, sid: str) -> bytes | None:
        try:
            return self.client.get(self.key("session", sid))
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("session store did not answer") from exc

    def session_save(self, sid: str, data: str | None, ttl: int, drop: list[str]) -> None:
        """Delete the ``drop`` ids, then store ``data`` under ``sid`` for ``ttl`` seconds (None:
        only extend its life), in one round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for old in drop:
                pipe.delete(self.key("session", old))
            if data is not None:
                pipe.set(self.key("session", sid), data, ex=ttl)
            elif ttl:
                pipe.expire(self.key("session", sid), ttl)
            pipe.execute()
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("session store did not answer") from exc

    def persistence(self) -> str | None:
        """How the Redis server keeps its data across a restart ("aof", "rdb", or None for
        nothing); raises StoreUnavailable when it does not answer."""
        if self.embedded:
            return None
        try:
            config = self.client.config_get("appendonly")
            saves = self.client.config_get("save")
        except redis_lib.ResponseError:       # CONFIG disabled (a managed Redis): unknown
            return "unknown (CONFIG not allowed)"
        except redis_lib.RedisError as exc:
            raise StoreUnavailable("Redis did not answer") from exc
        if config.get("appendonly") == "yes":
            return "aof"
        return "rdb" if saves.get("save") else None

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis_lib.RedisError:
            return False

