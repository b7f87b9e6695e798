"""e-ME: the citizen's own profile store. Contact items are self-declared (unverified); the
residential address counts as verified only when an address proof backs it."""
from __future__ import annotations

from schemas.departments import ProfileReply
from schemas.quick_check import QuickCheck

from .base import Connector, ItemValue, SubjectNotFound


class EMEConnector(Connector):
    source = "eme"
    schema = QuickCheck(ProfileReply())

    def fetch(self, hkid: str, items: list[str]) -> dict[str, ItemValue]:
        reply = self._load(self.schema, self.client.lookup("/eme/v1/profile", {"hkid": hkid}))
        out = {}
        as_of = reply["as_of"]
        if "contact.mobile" in items and reply.get("mobile"):
            out["contact.mobile"] = ItemValue(reply["mobile"], self.source, False, as_of)
        if "contact.email" in items and reply.get("email"):
            out["contact.email"] = ItemValue(reply["email"], self.source, False, as_of)
        if "address.residential" in items and reply.get("address"):
            out["address.residential"] = ItemValue(
                reply["address"], self.source, bool(reply.get("address_verified_by")), as_of)
        return out

    def profile(self, hkid: str) -> dict | None:
        """The citizen's e-ME profile as e-ME holds it (None: nothing kept yet)."""
        try:
            return self._load(self.schema, self.client.lookup("/eme/v1/profile", {"hkid": hkid}))
        except SubjectNotFound:
            return None

    def update(self, hkid: str, profile: dict) -> dict:
        """Replace the citizen's self-declared items (mobile, email, address); an address that
        changed loses the proof that backed the old one."""
        return self._load(self.schema, self.client.write(
            "/eme/v1/profile/update", {"hkid": hkid, "profile": profile}))

    def record_proof(self, hkid: str, proof: dict) -> None:
        """Keep a checked address proof; a verified one marks the address as backed."""
        self.client.write("/eme/v1/profile/proof", {"hkid": hkid, "proof": proof})
