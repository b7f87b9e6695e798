"""Route data items to their connectors (by the catalogue's ``source``) and assemble the answer
with provenance, minimised to exactly the items asked for."""
from __future__ import annotations

from connectors.base import ConnectorError, DepartmentsClient, ItemValue
from connectors.eme import EMEConnector
from connectors.immd import ImmigrationConnector
from connectors.utilities import UtilitiesConnector
from schemas.catalogue import catalogue


class ExchangeError(Exception):
    """The sources could not provide the consented items right now."""


class Router:
    def __init__(self, client: DepartmentsClient):
        self.connectors = {c.source: c for c in (ImmigrationConnector(client), EMEConnector(client),
                                                 UtilitiesConnector(client))}

    def fetch(self, hkid: str, items: list[str]) -> dict[str, dict]:
        by_source: dict[str, list[str]] = {}
        for item in items:
            by_source.setdefault(catalogue()[item]["source"], []).append(item)
        values: dict[str, ItemValue] = {}
        for source, wanted in by_source.items():
            try:
                values.update(self.connectors[source].fetch(hkid, wanted))
            except ConnectorError as exc:
                raise ExchangeError(f"source {source} unavailable") from exc
        return {item: {"value": v.value, "source": v.source, "verified": v.verified,
                       "as_of": v.as_of}
                for item, v in ((i, values.get(i)) for i in items) if v is not None}
