"""Pushing a signed message to a URL a requester registered — CDI callbacks
(``callbacks.py``) and revocation events (``events.py``) — with the same rules:

- one ``requests`` session for these pushes (apart from the connectors': another trust domain),
  no proxy variables, no redirects followed (a redirect is a failed try), a (connect, read)
  timeout, the receiver's body never read;
- outside demo mode never to a loopback, link-local or private address, even by a registered
  DNS name that resolves to one (checked at each try);
- tries spaced by ``backoff * 2^(n-1)`` seconds, and after ``attempts`` tries the push ends
  ``failed``; a claimed push is its worker's for one try's timeout and a margin (a lease), and
  its outcome is written only under that lease;
- a ``Pusher`` (one per kind of push in ``cdeg worker``) claims only as many pushes as it has
  free threads, and at most ``per_host`` at a time for one host: a receiver that is down,
  slow or drips its answer holds at most its own host's share, never the others'.
"""
from __future__ import annotations

import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import urlsplit

import requests
from sqlalchemy import update

from gateway.requester_registry import _is_internal

LEASE_MARGIN = 5


class Pusher:
    """A bounded pool for one kind of push."""

    def __init__(self, name: str, threads: int = 8, per_host: int = 2):
        self.threads, self.per_host = threads, per_host
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._busy = 0
        self._hosts: Counter = Counter()
        self._keys: set = set()          # pushes a thread here is still trying

    def room(self) -> tuple[int, Counter]:
        with self._lock:
            return self.threads - self._busy, Counter(self._hosts)

    def trying(self, key) -> bool:
        """Whether a thread here is still on this push (past its lease, a receiver dripping
        its answer): it is not claimed again meanwhile."""
        with self._lock:
            return key in self._keys

    def submit(self, host: str, fn, *args, key=None) -> None:
        with self._lock:
            self._busy += 1
            self._hosts[host] += 1
            self._keys.add(key)

        def done(_future):
            with self._lock:
                self._busy -= 1
                self._hosts[host] -= 1
                self._keys.discard(key)
        self.pool.submit(fn, *args).add_done_callback(done)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False)


def host_of(url: str | None) -> str:
    return (urlsplit(url).hostname or "") if url else ""


def claim(gw, due, table, id_col, next_col, url_of, pusher: Pusher | None, limit: int = 20):
    """Claim the pushes that are due (``due``: a select of them, oldest first), as many as
    ``pusher`` has room for and at most its ``per_host`` per host; each claimed row gets
    ``claimed_until`` (its lease), under which alone its outcome is written."""
    now = gw.clock.now()
    free, hosts = pusher.room() if pusher is not None else (limit, Counter())
    cap = pusher.per_host if pusher is not None else limit
    if free <= 0:
        return []
    with gw.transaction() as conn:
        query = due.limit(min(limit, free) * 4)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=table, skip_locked=True)
        chosen = []
        for found in conn.execute(query):
            row = SimpleNamespace(**found._mapping)
            if pusher is not None and pusher.trying(getattr(row, id_col.name)):
                continue              # still being tried here: never sent twice by this worker
            host = host_of(url_of(row))
            if hosts[host] >= cap:
                continue              # that host has its share in flight: the rest wait
            hosts[host] += 1
            chosen.append(row)
            if len(chosen) >= min(limit, free):
                break
        if chosen:
            until = now + lease(gw)
            conn.execute(update(table)
                         .where(id_col.in_([getattr(r, id_col.name) for r in chosen]))
                         .values({next_col.name: until}))
            for row in chosen:
                row.claimed_until = until
    return chosen


def run(gw, rows, pusher: Pusher | None, url_of, deliver_quietly, key_of=None) -> int:
    for row in rows:
        if pusher is None:
            deliver_quietly(gw, row)
        else:
            pusher.submit(host_of(url_of(row)), deliver_quietly, gw, row,
                          key=key_of(row) if key_of else None)
    return len(rows)


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False       # no proxy variables: the registered URL, and only it
    session.headers["User-Agent"] = "cdeg-gateway/0.1"
    return session


_SESSION = _session()


def lease(gw) -> int:
    """How long a claimed push is its worker's: one try's whole timeout and a margin."""
    return int(sum(gw.config.callback_timeout)) + LEASE_MARGIN


def wait_before(gw, attempts: int) -> int:
    """Seconds before the next try, after ``attempts`` tries."""
    return max(1, round(gw.config.callback_backoff * 2 ** (attempts - 1)))


def _refused_destination(gw, url: str) -> str | None:
    if gw.config.demo:
        return None
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return "the URL's host name did not resolve"      # never left to a second lookup
    if not addresses or any(_is_internal(a.split("%")[0]) for a in addresses):
        return "the URL resolves to a private or loopback address"
    return None


def post(gw, url: str, body: str, content_type: str, *, accept: str | None = None,
         ok=lambda status: 200 <= status < 300) -> str | None:
    """POST once; None when the receiver took it, else why not (no personal data)."""
    refused = _refused_destination(gw, url)
    if refused:
        return refused
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    try:
        resp = _SESSION.post(url, data=body.encode("ascii"), headers=headers,
                             timeout=gw.config.callback_timeout, allow_redirects=False,
                             stream=True)
    except requests.Timeout:
        return "no answer in time"
    except requests.RequestException as exc:
        return f"could not connect ({type(exc).__name__})"
    try:
        return None if ok(resp.status_code) else f"answered {resp.status_code}"
    finally:
        resp.close()                 # the receiver's body is not read
