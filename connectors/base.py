"""The connector interface, its one error family, and the one HTTP session they share.

    ConnectorError               the source could not give an answer we can use
    ├── SourceUnavailable        timeout, connection refused, 5xx: try again later (503)
    ├── SubjectNotFound          the source does not know this citizen
    └── BadReply                 the source answered something we cannot trust

Connectors call only the configured departments base URL, never a URL taken from a request,
with a (connect, read) timeout, no redirects, and retries only for idempotent reads. Without a
configured URL the mock department services answer in this process: the same lookup, with the
request and the reply passed through JSON as they would be on the wire, minus the socket.
"""
from __future__ import annotations

import abc
import json
from dataclasses import dataclass

import requests
from marshmallow import ValidationError
from requests.adapters import HTTPAdapter
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


class DepartmentsClient:
    """The gateway's one HTTP session towards the department services."""

    def __init__(self, base_url: str | None, timeout=(2.0, 5.0), in_process=None):
        self.in_process = None
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
            from connectors.mock.departments import Departments
            self.base_url = IN_PROCESS_BASE
            self.in_process = in_process or Departments()

    def lookup(self, path: str, payload: dict) -> dict:
        """POST a lookup (the lookups are reads: safe to retry) and answer the JSON reply.

        Identifiers go in the body, never in the URL, so they stay out of access logs.
        """
        if self.in_process is not None:
            status, body = self.in_process.answer(path, json.loads(json.dumps(payload)))
            wire = json.dumps(body)
            return self._check(path, status, "application/json", lambda: json.loads(wire))
        try:
            resp = self.session.post(self.base_url + path, json=payload, timeout=self.timeout,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{path}: no answer") from exc
        return self._check(path, resp.status_code, resp.headers.get("Content-Type", ""), resp.json)

    @staticmethod
    def _check(path: str, status: int, content_type: str, read_json) -> dict:
        if status == 404:
            raise SubjectNotFound(path)
        if status >= 500:
            raise SourceUnavailable(f"{path}: answered {status}")
        if status != 200:
            raise BadReply(f"{path}: answered {status}")
        if not content_type.startswith("application/json"):
            raise BadReply(f"{path}: answered a non-JSON body")
        try:
            body = read_json()
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
