"""The connector interface, its one error family, and the one HTTP session they share.

    ConnectorError               the source could not give an answer we can use
    ├── SourceUnavailable        timeout, connection refused, 5xx: try again later (503)
    ├── SubjectNotFound          the source does not know this citizen
    └── BadReply                 the source answered something we cannot trust

Connectors call only the configured departments base URL, never a URL taken from a request,
with a (connect, read) timeout, no redirects, and retries only for idempotent reads. Without a
configured URL the mock department services are mounted on the session in-process, so the
connector code and its HTTP semantics are the same either way.
"""
from __future__ import annotations

import abc
import io
from dataclasses import dataclass

import requests
from marshmallow import ValidationError
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.util.retry import Retry

IN_PROCESS_BASE = "http://departments.in-process"


class ConnectorError(Exception):
    pass


class SourceUnavailable(ConnectorError):
    pass


class SubjectNotFound(ConnectorError):
    pass


class BadReply(ConnectorError):
    pass


@dataclass(frozen=True)
class ItemValue:
    value: object
    source: str
    verified: bool
    as_of: str


class WSGIAdapter(BaseAdapter):
    """Answer requests from a WSGI app in this process (the embedded mock departments):
    the request is handed to the app as a WSGI call, with no socket in between."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    def send(self, request, **kwargs):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        path, _, query = request.path_url.partition("?")
        environ = {
            "REQUEST_METHOD": request.method, "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "departments.in-process", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
            "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        }
        for name, value in request.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        out = requests.Response()
        code, _, reason = started["status"].partition(" ")
        out.status_code, out.reason = int(code), reason
        out.headers.update(dict(started["headers"]))
        out.raw = io.BytesIO(data)
        out.url = request.url
        out.request = request
        return out

    def close(self):
        pass


class DepartmentsClient:
    """The gateway's one HTTP session towards the department services."""

    def __init__(self, base_url: str | None, timeout=(2.0, 5.0), mock_app=None):
        self.session = requests.Session()
        self.session.trust_env = False   # only the configured base URL; no proxy variables
        self.session.headers["User-Agent"] = "cdeg-gateway/0.1"
        self.timeout = timeout
        if base_url:
            self.base_url = base_url.rstrip("/")
            retry = Retry(total=2, connect=2, read=1, backoff_factor=0.1,
                          status_forcelist=(502, 503, 504), allowed_methods=("GET", "POST"),
                          raise_on_status=False)
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        else:
            if mock_app is None:
                from connectors.mock.departments import create_app
                mock_app = create_app()
            self.base_url = IN_PROCESS_BASE
            self.session.mount(IN_PROCESS_BASE, WSGIAdapter(mock_app))

    def lookup(self, path: str, payload: dict) -> dict:
        """POST a lookup (the lookups are reads: safe to retry) and answer the JSON reply.

        Identifiers go in the body, never in the URL, so they stay out of access logs.
        """
        try:
            resp = self.session.post(self.base_url + path, json=payload, timeout=self.timeout,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{path}: no answer") from exc
        if resp.status_code == 404:
            raise SubjectNotFound(path)
        if resp.status_code >= 500:
            raise SourceUnavailable(f"{path}: answered {resp.status_code}")
        if resp.status_code != 200:
            raise BadReply(f"{path}: answered {resp.status_code}")
        if not resp.headers.get("Content-Type", "").startswith("application/json"):
            raise BadReply(f"{path}: answered a non-JSON body")
        try:
            body = resp.json()
        except ValueError as exc:
            raise BadReply(f"{path}: answered malformed JSON") from exc
        if not isinstance(body, dict):
            raise BadReply(f"{path}: answered a non-object")
        return body


class Connector(abc.ABC):
    """Fetches the items of one source for one citizen."""

    source = ""

    def __init__(self, client: DepartmentsClient):
        self.client = client

    @abc.abstractmethod
    def fetch(self, hkid: str, items: list[str]) -> dict[str, ItemValue]:
        """Answer the asked items this source holds for the citizen."""

    def _load(self, schema, body: dict) -> dict:
        try:
            return schema.load(body)
        except ValidationError as exc:
            raise BadReply(f"{self.source}: reply failed validation "
                           f"({', '.join(sorted(exc.messages))})") from exc
