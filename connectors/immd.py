"""Immigration Department: identity items, authoritative."""
from __future__ import annotations

from schemas.departments import IdentityReply
from schemas.hkid import display
from schemas.quick_check import QuickCheck

from .base import Connector, ItemValue

_FIELDS = {"identity.name_en": "name_en", "identity.name_zh": "name_zh",
           "identity.date_of_birth": "date_of_birth", "identity.sex": "sex"}


class ImmigrationConnector(Connector):
    source = "immd"
    schema = QuickCheck(IdentityReply())

    def fetch(self, hkid: str, items: list[str]) -> dict[str, ItemValue]:
        reply = self._load(self.schema, self.client.lookup("/immd/v1/identity", {"hkid": hkid}))
        out = {}
        for item in items:
            if item == "identity.hkid":
                out[item] = ItemValue(display(hkid), self.source, True, reply["as_of"])
            elif item in _FIELDS:
                out[item] = ItemValue(reply[_FIELDS[item]], self.source, True, reply["as_of"])
        return out
