"""The gateway's signing keys: generated on first start into the instance folder, rotated by
``cdeg keys rotate``, published in ``/jwks.json``.

Layout: ``<instance>/keys/<kid>.pem`` (PKCS#8, mode 0600) and ``<instance>/keys/keyring.json``
listing ``{kid, created_at, retired_at}``. The newest key signs; a retired key never signs
again but stays published — receipts, signed data, CDI results and checkpoints it signed must
verify for as long as the requester keeps them — until ``prune`` (``cdeg keys prune``) finds
that nothing it signed is still within the longest retention of any policy. A running gateway
notices a rotation or a prune made by another process (the keyring file's mtime) within a
second.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from jwcrypto import jwk

from .errors import TokenError


def keep_retired_for(conn, config) -> int:
    """How long a retired key must stay published: the longest retention of any registered
    requester's policy (receipts, signed data, CDI results are kept that long), and never less
    than an access token's life."""
    from sqlalchemy import select

    from gateway.store.db import requesters
    from schemas.duration import InvalidDuration, seconds
    longest = config.retired_key_published
    for (policy,) in conn.execute(select(requesters.c.policy)):
        for purpose in ((policy or {}).get("purposes") or {}).values():
            try:
                longest = max(longest, seconds(purpose.get("retention")))
            except InvalidDuration:
                continue
    return longest


class Keyring:
    def __init__(self, folder: Path, clock):
        self.folder = Path(folder)
        self.clock = clock
        self._lock = threading.Lock()
        self._checked = 0.0
        self._mtime = None
        self._keys: dict[str, jwk.JWK] = {}
        self._meta: list[dict] = []
        self._jwks_doc: dict = {"keys": []}
        self.ensure()

    @property
    def index(self) -> Path:
        return self.folder / "keyring.json"

    @contextmanager
    def _exclusive(self):
        """One writer at a time across processes (gunicorn workers starting together, the CLI)."""
        with self._lock, open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure(self) -> None:
        """Create the folder and a first key when there is none."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        with self._exclusive():
            if not self.index.exists():
                self._add_key()
        self._load()

    def rotate(self) -> str:
        """Add a new signing key; the current one is retired but stays published."""
        with self._exclusive():
            kid = self._add_key()
        self._checked = 0.0
        return kid

    def _add_key(self) -> str:
        """Write a new key and list it; the caller holds the exclusive lock."""
        meta = json.loads(self.index.read_text()) if self.index.exists() else []
        now = self.clock.now()
        key = jwk.JWK.generate(kty="EC", crv="P-256")
        kid = key.thumbprint()[:16] + f"-{now}"
        pem_path = self.folder / f"{kid}.pem"
        fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_to_pem(private_key=True, password=None))
        for entry in meta:
            if entry.get("retired_at") is None:
                entry["retired_at"] = now
        meta.append({"kid": kid, "created_at": now, "retired_at": None})
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.index)
        return kid

    def prune(self, keep_for: int) -> list[str]:
        """Remove the retired keys retired more than ``keep_for`` seconds ago (nothing they
        signed is still to be verified); answer their kids. The signing key always stays."""
        with self._exclusive():
            meta = json.loads(self.index.read_text())
            now = self.clock.now()
            gone = [e["kid"] for e in meta[:-1]
                    if e.get("retired_at") is not None and e["retired_at"] + keep_for <= now]
            if gone:
                kept = [e for e in meta if e["kid"] not in gone]
                tmp = self.index.with_suffix(".tmp")
                tmp.write_text(json.dumps(kept, indent=2))
                os.replace(tmp, self.index)
                for kid in gone:
                    (self.folder / f"{kid}.pem").unlink(missing_ok=True)
        self._checked = 0.0
        self._refresh()
        return gone

    def _load(self) -> None:
        mtime = self.index.stat().st_mtime_ns
        meta = json.loads(self.index.read_text())
        keys = {}
        for entry in meta:
            kid = entry["kid"]
            pem = jwk.JWK.from_pem((self.folder / f"{kid}.pem").read_bytes())
            keys[kid] = jwk.JWK(**{**pem.export(as_dict=True), "kid": kid,
                                   "use": "sig", "alg": "ES256"})
        self._keys, self._meta, self._mtime = keys, meta, mtime
        self._jwks_doc = None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            if self.index.stat().st_mtime_ns != self._mtime:
                with self._lock:
                    self._load()
        except OSError:
            pass

    @property
    def signing_key(self) -> jwk.JWK:
        self._refresh()
        return self._keys[self._meta[-1]["kid"]]

    def published(self) -> list[jwk.JWK]:
        self._refresh()
        return [self._keys[e["kid"]] for e in self._meta]

    def any_key(self, kid) -> jwk.JWK | None:
        """Any key this gateway holds, retired ones included (a kept checkpoint or receipt is
        checked against it long after the JWKS stopped publishing it); None if unknown."""
        self._refresh()
        return self._keys.get(kid) if isinstance(kid, str) else None

    def verification_key(self, kid, *, retired_within: int | None = None) -> jwk.JWK:
        """A published key by ``kid``; with ``retired_within``, only one still signing or
        retired at most that many seconds ago (an access token lives minutes: its key, retired
        longer ago than that, signed none that is still valid)."""
        if not isinstance(kid, str):
            raise TokenError("kid missing")
        self._refresh()
        for entry in self._meta:
            if entry["kid"] == kid:
                if retired_within is not None and entry["retired_at"] is not None \
                        and entry["retired_at"] + retired_within < self.clock.now():
                    raise TokenError("this kid's key was retired; it signs nothing any more")
                return self._keys[kid]
        raise TokenError("unknown kid")

    def jwks(self) -> dict:
        self._refresh()
        if self._jwks_doc is None:
            keys = [k.export_public(as_dict=True) for k in self.published()]
            self._jwks_doc = {"_at": self.clock.now() // 10,
                              "doc": {"keys": [dict(k, use="sig", alg="ES256") for k in keys]}}
        return self._jwks_doc["doc"]
