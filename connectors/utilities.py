"""The utilities (WSD, CLP, HK Electric, Towngas): the bill that proves an address."""
from __future__ import annotations

from schemas.departments import AddressProofReply

from .base import Connector, ItemValue


class UtilitiesConnector(Connector):
    source = "utilities"
    schema = AddressProofReply()

    def fetch(self, hkid: str, items: list[str]) -> dict[str, ItemValue]:
        if "address.proof" not in items:
            return {}
        reply = self._load(self.schema,
                           self.client.lookup("/utilities/v1/address-proof", {"hkid": hkid}))
        value = {k: reply[k] for k in ("issuer", "account_reference", "bill_date", "verified")}
        return {"address.proof": ItemValue(value, reply["issuer"], bool(reply["verified"]),
                                           reply["as_of"])}
