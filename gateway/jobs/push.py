"""Pushing a signed message to a URL a requester registered — CDI callbacks
(``callbacks.py``) and revocation events (``events.py``) — with the same rules:

- one ``requests`` session for these pushes (apart from the connectors': another trust domain),
  no proxy variables, no redirects followed (a redirect is a failed try), a (connect, read)
  timeout, the receiver's body never read;
- outside demo mode never to a loopback, link-local or private address, even by a registered
  DNS name that resolves to one (checked at each try);
- tries spaced by ``backoff * 2^(n-1)`` seconds, and after ``attempts`` tries the push ends
  ``failed``; a claimed push is its worker's for one try's timeout and a margin (a lease).
"""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

import requests

from gateway.requester_registry import _is_internal

LEASE_MARGIN = 5


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
        return None                  # the POST itself will say it cannot connect
    if any(_is_internal(a.split("%")[0]) for a in addresses):
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
