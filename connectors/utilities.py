"""The utilities (WSD, CLP, HK Electric, Towngas): the bill that proves an address."""
from __future__ import annotations

from schemas.departments import AddressProofReply, BillReply
from schemas.quick_check import QuickCheck

from .base import Connector, ItemValue, SubjectNotFound


class UtilitiesConnector(Connector):
    source = "utilities"
    schema = QuickCheck(AddressProofReply())
    bill_schema = QuickCheck(BillReply())

    def bill(self, hkid: str, issuer: str, account_reference: str) -> dict | None:
        """The issuer's bill on that account for this citizen (None: the issuer has none)."""
        try:
            return self._load(self.bill_schema, self.client.lookup("/utilities/v1/bill", {
                "hkid": hkid, "issuer": issuer, "account_reference": account_reference}))
        except SubjectNotFound:
            return None

    def proof(self, hkid: str) -> dict | None:
        """The citizen's address proof as the utilities hold it (None: none yet)."""
        try:
            return self._load(self.schema, self.client.lookup("/utilities/v1/address-proof",
                                                              {"hkid": hkid}))
        except SubjectNotFound:
            return None

    def fetch(self, hkid: str, items: list[str]) -> dict[str, ItemValue]:
        if "address.proof" not in items:
            return {}
        reply = self._load(self.schema,
                           self.client.lookup("/utilities/v1/address-proof", {"hkid": hkid}))
        value = {k: reply[k] for k in ("issuer", "account_reference", "bill_date", "verified")}
        return {"address.proof": ItemValue(value, reply["issuer"], bool(reply["verified"]),
                                           reply["as_of"])}
