"""Route data items to their connectors (by the catalogue's ``source``) and assemble the answer
with provenance, minimised to exactly the items asked for."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from connectors.base import ConnectorError, DepartmentsClient, ItemValue, SubjectNotFound
from connectors.base import SourceTimeout as ConnectorTimeout
from connectors.eme import EMEConnector
from connectors.immd import ImmigrationConnector
from connectors.utilities import UtilitiesConnector
from gateway import metrics
from gateway.errors import SourceFailed, SourceTimeout
from schemas.catalogue import catalogue


class Router:
    """Sources are asked at the same time when they sit across the network (the departments
    answer independently); in-process they are simply called in turn."""

    def __init__(self, client: DepartmentsClient):
        self.connectors = {c.source: c for c in (ImmigrationConnector(client), EMEConnector(client),
                                                 UtilitiesConnector(client))}
        self.pool = None if client.in_process is not None else \
            ThreadPoolExecutor(max_workers=len(self.connectors), thread_name_prefix="connector")

    def ask(self, source: str, action: str, *args):
        """``connectors[source].<action>(*args)`` with its errors made the gateway's: too slow is
        ``SourceTimeout`` (504), down or answering wrongly ``SourceFailed`` (502), each naming
        the source. Every call to a source goes through here (reads, profile edits, bills)."""
        try:
            answer = getattr(self.connectors[source], action)(*args)
        except SubjectNotFound:
            metrics.connector_call(source, "not-found")
            raise                 # the source answered: it has nothing for this citizen
        except ConnectorTimeout as exc:
            metrics.connector_call(source, "timeout")
            raise SourceTimeout(f"source {source} did not answer in time") from exc
        except ConnectorError as exc:
            metrics.connector_call(source, "failed")
            raise SourceFailed(f"source {source} is down or answered wrongly") from exc
        metrics.connector_call(source, "ok")
        return answer

    def _fetch_one(self, source: str, hkid: str, wanted: list[str]) -> dict[str, ItemValue]:
        try:   # a source that holds nothing for this citizen: its items have no value
            return self.ask(source, "fetch", hkid, wanted)
        except SubjectNotFound:
            return {}

    def fetch(self, hkid: str, items: list[str]) -> dict[str, dict]:
        by_source: dict[str, list[str]] = {}
        for item in items:
            by_source.setdefault(catalogue()[item]["source"], []).append(item)
        values: dict[str, ItemValue] = {}
        if self.pool is None or len(by_source) == 1:
            for source, wanted in by_source.items():
                values.update(self._fetch_one(source, hkid, wanted))
        else:
            futures = [self.pool.submit(self._fetch_one, source, hkid, wanted)
                       for source, wanted in by_source.items()]
            for future in futures:
                values.update(future.result())
        return {item: {"value": v.value, "source": v.source, "verified": v.verified,
                       "as_of": v.as_of}
                for item, v in ((i, values.get(i)) for i in items) if v is not None}
