"""The gateway on a real socket, for clients that speak HTTP and nothing else (Authlib, PyJWT,
requests, a real browser).

``live_gateway`` starts the embedded default (SQLite in a temporary instance folder, the
in-process Redis stand-in, inline jobs) seeded with the demo data (a copy of the session's
seeded instance, see conftest.py), served by werkzeug in a thread on a free port of
127.0.0.1, and yields a :class:`LiveGateway`. The issuer is the server's own base URL, as
``cdeg serve --host 127.0.0.1`` would make it.

Import the fixture into a test module: ``from .live import live_gateway  # noqa: F401``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from gateway import create_app
from gateway.config import Config
from gateway.demo.seed import seed

from .conftest import TEST_DATA_KEY, departments, prepare_instance, share_compiled_templates


@dataclass(frozen=True)
class LiveGateway:
    base: str           # e.g. http://127.0.0.1:40123, also the issuer
    app: Flask

    @property
    def gw(self):
        return self.app.extensions["cdeg"]

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def live_gateway(tmp_path):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    holder: dict = {}

    def wsgi(environ, start_response):
        return holder["app"](environ, start_response)

    # Bind first (port 0: the kernel picks a free port, no race), then build the app with the
    # issuer that port gives.
    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    config = Config(instance_dir=tmp_path / "instance", issuer=base, env="test",
                    data_key=TEST_DATA_KEY)
    seeded = prepare_instance(config)   # the session's seeded instance, copied (conftest.py)
    app = create_app(config, departments=departments())
    share_compiled_templates(app)
    if not seeded:
        seed(app.extensions["cdeg"])
    holder["app"] = app
    # a short poll, so that shutdown() at the end does not wait out werkzeug's default 0.5 s
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="cdeg-live", daemon=True)
    thread.start()
    try:
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        yield LiveGateway(base=base, app=app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.extensions["cdeg"].close()
