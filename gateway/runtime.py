"""The one way to reach the running gateway (``gateway.instance.Gateway``: configuration,
engines, Redis, keys, connectors — built once per process).

In a request it is the app's (``create_app`` builds it); in ``cdeg worker`` it is the one the
worker built and installed before taking jobs. Nothing builds a second one behind the caller's
back: a process that has neither gets a clear error, not a fresh gateway read from the
environment (with its own instance folder, SQLite file and keys).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, has_app_context

if TYPE_CHECKING:
    from gateway.instance import Gateway

EXTENSION = "cdeg"
_installed: Gateway | None = None


def current() -> Gateway:
    if has_app_context():
        return current_app.extensions[EXTENSION]
    if _installed is None:
        raise RuntimeError("no gateway in this process: create_app() or install() first")
    return _installed


def attach(app, gw: Gateway) -> None:
    """``create_app``'s: the app's requests reach ``gw``."""
    app.extensions[EXTENSION] = gw


def of(app) -> Gateway:
    """The gateway an app was built with, for code that holds the app outside a request (the
    CLI starting it, tests)."""
    return app.extensions[EXTENSION]


def install(gw: Gateway | None) -> None:
    """The gateway of this process outside requests (a worker's; None removes it)."""
    global _installed
    _installed = gw
