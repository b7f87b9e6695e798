"""The running gateway: configuration, database, Redis, keys, clock and connectors, built once
per process and shared by every request (nothing here is loaded per request). Reach it with
``gateway.runtime.current()``; domain functions are handed it (``gw``) and read what they need."""
from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


from sqlalchemy.engine import Connection, Engine

from gateway import rate_limits, requester_registry
from gateway.clock import Clock
from gateway.config import Config
from gateway.audit import entries, sequencer
from gateway.errors import Contention
from gateway.exchange.release import GrantCache
from gateway.exchange.router import Router
from gateway.store import db
from gateway.store.prepared import Prepared
from gateway.store.redis import RedisStore
from gateway.tokens.access import AccessTokenVerifier
from gateway.tokens.keyring import Keyring
from connectors.base import DepartmentsClient


def private_folder(folder: Path) -> None:
    """The instance folder (ledger, keys, secret) is readable by the gateway's user alone."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def _instance_secret(config: Config) -> bytes:
    """CDEG_SECRET_KEY, or (demo) a secret generated once into the instance folder. Workers
    starting together agree on one: it is written aside and linked into place, and whoever
    loses the race reads the winner's."""
    if config.secret_key:
        return config.secret_key.encode()
    path = Path(config.instance_dir) / "secret.key"
    if not path.exists():
        tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip().encode()


EME_STORE = "eme-profiles.json"   # the in-process e-ME mock's store of citizens' edits


class Gateway:
    config: Config
    clock: Clock
    session_secret: bytes           # signs citizen sessions and device marks
    pairwise_secret: bytes          # keys the pairwise subjects requesters see
    db: Engine                      # write transactions (``transaction``, ``in_transaction``)
    reads: Engine                   # the same pool in autocommit: single-statement reads
    prepared: Prepared | None       # PostgreSQL: the data path's statements on that pool
    grants: GrantCache | None       # PostgreSQL: grants read for recent tokens (release.py)
    redis: RedisStore
    rate_leases: rate_limits.Leases  # this process's leases of the data API's rate limit
    keyring: Keyring
    access_tokens: AccessTokenVerifier
    departments: DepartmentsClient
    router: Router
    client_keys: requester_registry.KeyCache
    sealer: "identifiers.Sealer"     # personal identifiers sealed at rest (gateway/identifiers.py)

    def __init__(self, config: Config, *, clock: Clock | None = None, departments=None):
        config.validate()  # however it was built: production never starts half-configured
        self.config = config
        self.clock = clock or Clock()
        private_folder(Path(config.instance_dir))
        secret = _instance_secret(config)
        self.session_secret = hmac.new(secret, b"session", hashlib.sha256).digest()
        self.pairwise_secret = hmac.new(secret, b"pairwise-subject", hashlib.sha256).digest()
        engine = db.make_engine(config.sqlalchemy_url)
        if config.sqlalchemy_url.startswith("sqlite"):
            db.upgrade(engine)
        # the audit log's writers read the number of shards from the engine they write through
        self.db = engine.execution_options(**{entries.SHARDS_OPTION: config.log_shards})
        self.reads = db.reader(self.db)
        self.prepared = Prepared(self.db) if self.db.dialect.name == "postgresql" else None
        self.grants = GrantCache(self.clock) if self.prepared is not None else None
        self.redis = RedisStore(config.redis_url, config.redis_prefix)
        self.rate_leases = rate_limits.Leases(config.client_rate_lease_max,
                                              config.client_rate_lease_ms)
        self.keyring = Keyring(Path(config.instance_dir) / "keys", self.clock)
        self.access_tokens = AccessTokenVerifier(self.keyring, config.issuer, config.api_audience,
                                                 self.clock, config.access_token_ttl,
                                                 config.clock_skew)
        if departments is None and not config.departments_url:   # embedded: the mock in-process,
            from connectors.mock.departments import Departments  # e-ME edits kept by the instance
            departments = Departments(store=Path(config.instance_dir) / EME_STORE)
        from gateway.logs import request_id
        self.departments = DepartmentsClient(config.departments_url, config.connector_timeout,
                                             in_process=departments, request_id=request_id)
        self.router = Router(self.departments)
        self.client_keys = requester_registry.KeyCache()
        from gateway import identifiers
        self.sealer = identifiers.Sealer(self, identifiers.load_kek(config),
                                         identifiers.previous_kek(config))
        if db.current_revision(self.db.engine) == db.head_revision():
            self.sealer.load()               # a wrong CDEG_DATA_KEY: refused here, at start
            identifiers.seal_legacy(self)    # a ledger from before: sealed now (resumable)
        if config.production:
            self._refuse_demo_data()

    def _refuse_demo_data(self) -> None:
        """CDEG_ENV=production never runs with the demo requesters' published keys."""
        from gateway.config import ConfigError
        from gateway.demo.seed import demo_requesters, public_jwks
        with self.db.connect() as conn:
            for entry in demo_requesters():
                try:
                    row = requester_registry.get(conn, entry["client_id"])
                except requester_registry.UnknownRequester:
                    continue
                if row["jwks"] == public_jwks(entry["client_id"]):
                    raise ConfigError(f"production instance holds demo requester "
                                      f"{entry['client_id']!r} with its demo keys; remove it")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        Work it asked for (``jobs.outbox.add``) is handed on after the commit, never before."""
        from gateway.jobs import outbox
        with self.db.connect() as conn:
            outbox.asked(conn)  # nothing left over from an earlier use of this connection
            entries.appended(conn)
            conn.info[outbox.OPEN] = True
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                if not conn.invalidated:    # a lost connection's info went with it: asking
                    outbox.asked(conn)      # would reconnect (to a database that may be down)
                    entries.appended(conn)  # and raise that instead of the 503 at hand
                raise
            finally:
                if not conn.invalidated:
                    conn.info.pop(outbox.OPEN, None)
            committed_work = outbox.asked(conn)
            logged = entries.appended(conn)
        if logged:
            sequencer.after_commit(self)
        if committed_work:
            outbox.relay_quietly(self)

    def in_transaction(self, work, *, attempts: int = 4, engine=None):
        """``work(conn)`` in one write transaction, run again (at most ``attempts`` times, with
        a short random pause) when it lost a race to a concurrent transaction — a deadlock or a
        serialization failure on PostgreSQL, after which nothing of it was written. With
        ``engine=self.reads`` each statement of ``work`` commits on its own (autocommit)."""
        def once():
            if engine is not None:
                with engine.connect() as conn:
                    return work(conn)
            with self.transaction() as conn:
                return work(conn)
        return self.retried(once, attempts=attempts)

    @staticmethod
    def retried(once, *, attempts: int = 4):
        """``once()``, run again when it lost a race (``Contention``: nothing was written)."""
        for attempt in range(1, attempts + 1):
            try:
                return once()
            except Contention:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0.001, 0.005) * attempt)
        raise AssertionError("unreachable")

    def requester(self, conn, client_id: str) -> dict:
        return requester_registry.get(conn, client_id)

    def close(self) -> None:
        if self.router.pool is not None:
            self.router.pool.shutdown(wait=False)
        if self.prepared is not None:
            self.prepared.close()
        self.db.engine.dispose()
