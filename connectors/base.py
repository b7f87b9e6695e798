"""The connector interface, its one error family, and the one HTTP session they share.

    ConnectorError               the source could not give an answer we can use
    ├── SourceUnavailable        timeout, connection refused, 5xx: try again later (503)
    ├── SubjectNotFound          the source does not know this citizen
    └── BadReply                 the source answered something we cannot trust

Connectors call only the configured departments base URL, never a URL taken from a request,
with a (connect, read) timeout, no redirects, and retries only for idempotent reads. Without a
configured URL the mock department services answer in this process: the same lookup, with the
request and the reply passed through JSON as they would be on the wire, minus the socket.

A reply is read streamed and cut off past MAX_REPLY_BYTES, whatever its Content-Length says (or
does not say: a chunked answer is counted as it arrives), and never drained: a reply the gateway
will not use is dropped with its connection. Whatever cannot be read or parsed into one JSON
object (too large, not UTF-8, not JSON, nested past the parser's depth, not an object) is a
BadReply, which the gateway answers as the source being unavailable (503), never a 500.
"""
from __future__ import annotations

import abc
import json
import time
from dataclasses import dataclass

import requests
from marshmallow import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

IN_PROCESS_BASE = "http://departments.in-process"
_AS_SENT = json.JSONEncoder(ensure_ascii=False).encode   # an in-process reply's body, as sent
MAX_REPLY_BYTES = 256 * 1024   # a department's reply about one citizen is a few hundred bytes
READ_CHUNK = 16 * 1024
RETRY_STATUSES = (502, 503, 504)
STATUS_RETRIES = 2             # further attempts after a 502/503/504, backing off
WRITES = "/eme/v1/profile/"     # the paths that change something: update, proof
STATUS_BACKOFF = 0.1           # seconds, doubled each time; a Retry-After header is not obeyed


class ConnectorError(Exception):
    pass


class SourceUnavailable(ConnectorError):
    pass


class SourceTimeout(SourceUnavailable):
    """No answer within the (connect, read) timeout."""


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

    def __init__(self, base_url: str | None, timeout=(2.0, 5.0), in_process=None,
                 request_id=lambda: None):
        self.in_process = None
        self.request_id = request_id    # the caller's request id, sent as X-Request-ID
        self.session = requests.Session()
        self.session.trust_env = False   # only the configured base URL; no proxy variables
        self.session.headers["User-Agent"] = "cdeg-gateway/0.1"
        self.timeout = timeout
        if base_url:
            self.base_url = base_url.rstrip("/")
            # Connection failures are retried here; 502/503/504 in lookup(), because urllib3
            # would read (drain) the whole body of every answer it retries, however large.
            retry = Retry(total=2, connect=2, read=1, status=0, backoff_factor=0.1,
                          allowed_methods=("GET", "POST"), raise_on_status=False,
                          respect_retry_after_header=False)
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
            # writes (e-ME edits under WRITES) are retried only when the connection was never
            # made: one that timed out after being sent may have been applied
            writes = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.1,
                           allowed_methods=("POST",), raise_on_status=False)
            self.session.mount(self.base_url + WRITES, HTTPAdapter(max_retries=writes,
                                                                   pool_maxsize=16))
        else:
            from connectors.mock.departments import Departments
            self.base_url = IN_PROCESS_BASE
            self.in_process = in_process or Departments()

    def write(self, path: str, payload: dict) -> dict:
        """POST a change to a department (under ``WRITES``): never retried once sent."""
        assert path.startswith(WRITES)
        return self.lookup(path, payload, retried=False)

    def lookup(self, path: str, payload: dict, *, retried: bool = True) -> dict:
        """POST a lookup (the lookups are reads: safe to retry) and answer the JSON reply.

        Identifiers go in the body, never in the URL, so they stay out of access logs.
        """
        if self.in_process is not None:
            status, body = self.in_process.answer(path, json.loads(json.dumps(payload)))
            try:
                wire = _AS_SENT(body).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as exc:
                raise BadReply(f"{path}: answered a body that is not JSON") from exc
            return self._check(path, status, "application/json", lambda: wire)
        resp = self._post(path, payload, STATUS_RETRIES if retried else 0)
        try:
            return self._check(path, resp.status_code, resp.headers.get("Content-Type", ""),
                               lambda: self._read_capped(path, resp))
        finally:
            resp.close()   # an unread rest is dropped with the connection, not drained

    def _post(self, path: str, payload: dict, retries: int) -> requests.Response:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(STATUS_BACKOFF * 2 ** (attempt - 1))
            try:
                rid = self.request_id()
                resp = self.session.post(self.base_url + path, json=payload, timeout=self.timeout,
                                         allow_redirects=False, stream=True,
                                         headers={"X-Request-ID": rid} if rid else None)
            except requests.Timeout as exc:
                raise SourceTimeout(f"{path}: no answer in time") from exc
            except requests.RequestException as exc:
                raise SourceUnavailable(f"{path}: no answer") from exc
            if resp.status_code not in RETRY_STATUSES or attempt == retries:
                return resp
            resp.close()
        raise AssertionError("unreachable")

    @staticmethod
    def _read_capped(path: str, resp: requests.Response) -> bytes:
        """The body, or BadReply as soon as it is known to exceed MAX_REPLY_BYTES."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
            raise BadReply(f"{path}: answered more than {MAX_REPLY_BYTES} bytes")
        body = bytearray()
        try:
            for chunk in resp.iter_content(chunk_size=READ_CHUNK):
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise BadReply(f"{path}: answered more than {MAX_REPLY_BYTES} bytes")
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{path}: answer broken off") from exc
        return bytes(body)

    @staticmethod
    def _check(path: str, status: int, content_type: str, read_body) -> dict:
        if status == 404:
            raise SubjectNotFound(path)
        if status >= 500:
            raise SourceUnavailable(f"{path}: answered {status}")
        if status != 200:
            raise BadReply(f"{path}: answered {status}")
        if not content_type.startswith("application/json"):
            raise BadReply(f"{path}: answered a non-JSON body")
        raw = read_body()
        if len(raw) > MAX_REPLY_BYTES:
            raise BadReply(f"{path}: answered more than {MAX_REPLY_BYTES} bytes")
        try:
            body = json.loads(raw.decode("utf-8"))
        except RecursionError as exc:
            raise BadReply(f"{path}: answered JSON nested too deep") from exc
        except ValueError as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
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
        """The reply loaded by its schema (a marshmallow schema, or its ``QuickCheck``), or
        ``BadReply`` naming the fields that failed."""
        try:
            return schema.load(body)
        except ValidationError as exc:
            raise BadReply(f"{self.source}: reply failed validation "
                           f"({', '.join(sorted(exc.messages))})") from exc
