"""Personal identifiers at rest: the citizen's HKID is never stored in clear.

    citizens.hkid_index   HMAC-SHA256(index key, the normalised HKID), hex: "find this citizen"
                          is one indexed read
    citizens.hkid_sealed  AES-256-GCM(data key, the HKID), the row's subject_id as associated
                          data (a ciphertext moved to another row does not open)
                          written as "<data key id>:<base64url(nonce | ciphertext | tag)>"

Keys (envelope encryption, ``cryptography``'s AEADs; no home-made mode):

- the **key-encryption key** (KEK, 32 bytes) never enters the database: ``CDEG_DATA_KEY``
  (base64url; required under ``CDEG_ENV=production``), or in demo mode ``data-kek.key`` in the
  instance folder (mode 0600), generated on first start;
- the **data keys** and the **index key** live in the ``data_keys`` table, each wrapped by the
  KEK (AES-256-GCM, its id as associated data); the newest data key seals, any listed opens;
- ``cdeg keys rotate-data`` adds a data key and re-seals every citizen in batches while the
  gateway serves (a row is opened with whichever key sealed it; every process seals under the
  new key within ``RELOAD_EVERY`` seconds; retired data keys are kept, wrapped, so a row sealed
  meanwhile by a process that had not reloaded still opens); it also re-wraps every key under
  the current KEK — with the previous KEK in
  ``CDEG_DATA_KEY_PREVIOUS`` — which is how the KEK itself is rotated. Killed midway it
  resumes: each batch commits on its own.

A wrong or missing KEK: the gateway refuses to start, saying so (``KeyError``-free). A tampered
ciphertext: ``SealBroken``, for that record, never returned as data.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update

import logging

from gateway.config import ConfigError
from gateway.errors import IdentifierUnreadable
from gateway.store.db import citizens, data_keys
from schemas.hkid import normalise

log = logging.getLogger("cdeg.identifiers")
KEK_FILE = "data-kek.key"
BATCH = 500
RELOAD_EVERY = 30.0       # seconds: a process seals under a data key rotated elsewhere by then


class SealBroken(IdentifierUnreadable):
    """A sealed identifier did not open: tampered with, or sealed under a key not held."""

    def __init__(self, operator_detail: str):
        super().__init__()
        self.operator_detail = operator_detail     # logged, never in a response
        log.error("sealed identifier unreadable: %s", operator_detail)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kek_from(text: str, name: str) -> bytes:
    try:
        raw = _unb64(text.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: not base64url") from exc
    if len(raw) != 32:
        raise ConfigError(f"{name}: must be 32 bytes (base64url), not {len(raw)}; make one "
                          f"with: python -c \"import secrets,base64;print(base64.urlsafe_b64"
                          f"encode(secrets.token_bytes(32)).decode())\"")
    return raw


def load_kek(config) -> bytes:
    """The KEK: ``CDEG_DATA_KEY``, else (demo mode only) the instance folder's file."""
    if config.data_key:
        return _kek_from(config.data_key, "CDEG_DATA_KEY")
    if config.production:
        raise ConfigError("CDEG_DATA_KEY: production needs the key that wraps the data keys "
                          "(32 bytes, base64url), kept outside the database")
    path = Path(config.instance_dir) / KEK_FILE
    if not path.exists():
        tmp = path.with_name(f".{KEK_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_b64(secrets.token_bytes(32)))
        try:
            os.link(tmp, path)             # workers starting together agree on one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return _kek_from(path.read_text(), str(path))


def _new_key_id() -> str:
    """Data key ids sort in the order they were made (the newest seals)."""
    return f"dk-{time.time_ns():020d}-{secrets.token_hex(3)}"


def _wrap(kek: bytes, key_id: str, key: bytes) -> str:
    nonce = secrets.token_bytes(12)
    return _b64(nonce + AESGCM(kek).encrypt(nonce, key, key_id.encode()))


def _unwrap(kek: bytes, key_id: str, wrapped: str) -> bytes:
    raw = _unb64(wrapped)
    return AESGCM(kek).decrypt(raw[:12], raw[12:], key_id.encode())


class Sealer:
    """The keys in use, unwrapped in memory; built once per process (``Gateway.sealer``)."""

    def __init__(self, gw, kek: bytes, previous: bytes | None = None):
        self.gw, self.kek, self.previous = gw, kek, previous
        self.index_key: bytes = b""
        self.keys: dict[str, AESGCM] = {}
        self.current = ""
        self._state: tuple = (b"", {}, "")
        self._loaded = 0.0

    def _ready(self) -> None:
        if not self.current or time.monotonic() - self._loaded > RELOAD_EVERY:
            self.load()                # first use, or a rotation elsewhere since

    def load(self) -> None:
        """Read (and on a new ledger make) the keys; ConfigError when the KEK opens none."""
        # the autocommit reader: never a second write transaction beside the caller's (SQLite
        # would wait on itself)
        with self.gw.reads.connect() as conn:
            rows = conn.execute(select(data_keys).order_by(data_keys.c.key_id)).all()
        if not any(r.purpose == "index" for r in rows) or not any(r.purpose == "data"
                                                                   for r in rows):
            self._first_keys({r.purpose for r in rows})
            return self.load()
        keys, index = {}, None
        for row in rows:
            try:
                raw = _unwrap(self.kek, row.key_id, row.wrapped)
            except InvalidTag:
                try:             # a KEK rotation under way: the previous key still opens it
                    if self.previous is None:
                        raise InvalidTag()
                    raw = _unwrap(self.previous, row.key_id, row.wrapped)
                except InvalidTag:
                    raise ConfigError("CDEG_DATA_KEY: does not open the data keys in the "
                                      "database (the wrong key, or another instance's "
                                      "database)") from None
            if row.purpose == "index":
                index = raw
            else:
                keys[row.key_id] = AESGCM(raw)
        current = [r.key_id for r in rows if r.purpose == "data"][-1]
        self._state = (index, keys, current)           # one assignment: never half a state
        self.index_key, self.keys, self.current = self._state
        self._loaded = time.monotonic()

    def _first_keys(self, have: set[str]) -> None:
        from sqlalchemy.exc import IntegrityError
        now = self.gw.clock.now()
        wanted = [p for p in ("index", "data") if p not in have]
        for purpose in wanted:
            key_id = "index" if purpose == "index" else _new_key_id()
            try:
                with self.gw.db.begin() as conn:
                    conn.execute(data_keys.insert().values(
                        key_id=key_id, purpose=purpose, created_at=now,
                        wrapped=_wrap(self.kek, key_id, secrets.token_bytes(32))))
            except IntegrityError:
                pass                         # another process made it first

    # -- citizens -------------------------------------------------------------------------

    def index(self, hkid: str) -> str:
        self._ready()
        return hmac.new(self.index_key, normalise(hkid).encode(), hashlib.sha256).hexdigest()

    def seal(self, hkid: str, subject_id: str) -> str:
        self._ready()
        nonce = secrets.token_bytes(12)
        sealed = self.keys[self.current].encrypt(nonce, normalise(hkid).encode(),
                                                 subject_id.encode())
        return f"{self.current}:{_b64(nonce + sealed)}"

    def open(self, sealed: str | None, subject_id: str) -> str:
        if not isinstance(sealed, str) or ":" not in sealed:
            raise SealBroken(f"citizen {subject_id}: no sealed identifier")
        self._ready()
        key_id, _, body = sealed.partition(":")
        key = self.keys.get(key_id)
        if key is None:
            self.load()                      # rotated by another process meanwhile
            key = self.keys.get(key_id)
        try:
            raw = _unb64(body)
            return key.decrypt(raw[:12], raw[12:], subject_id.encode()).decode()
        except (AttributeError, InvalidTag, ValueError) as exc:
            raise SealBroken(f"citizen {subject_id}: the sealed identifier does not open "
                             f"(tampered with, or its key is gone)") from exc


# -- rotation -----------------------------------------------------------------------------

def rotate(gw, previous_kek: bytes | None = None, batch: int = BATCH, on_batch=None) -> dict:
    """A new data key; every citizen re-sealed under it, in batches that each commit; data keys
    kept (a row sealed meanwhile by a process not yet reloaded must open); every key re-wrapped
    under the current KEK (opened with
    ``previous_kek`` where the current one does not). Resumes where a killed run stopped."""
    sealer = gw.sealer
    now = gw.clock.now()
    rewrapped = _rewrap_all(gw, previous_kek)
    new_id = _new_key_id()
    with gw.db.begin() as conn:
        conn.execute(data_keys.insert().values(key_id=new_id, purpose="data", created_at=now,
                                               wrapped=_wrap(sealer.kek, new_id,
                                                             secrets.token_bytes(32))))
    sealer.load()
    resealed, unreadable = reseal_pending(gw, batch, on_batch)
    # the retired data keys stay (wrapped, in data_keys): a process that has not reloaded yet
    # (RELOAD_EVERY) may still seal a new citizen under one, and every row must keep opening
    return {"new_key": sealer.current, "resealed": resealed, "unreadable": unreadable,
            "rewrapped": rewrapped}


def seal_legacy(gw, batch: int = BATCH) -> int:
    """Citizens of a ledger from before identifiers were sealed (their HKID still in ``hkid``):
    sealed now, in batches that each commit (resumable; at every start, by the index on hkid,
    so it costs one indexed read when there is nothing to do)."""
    sealer, done, twins = gw.sealer, 0, []
    while True:
        with gw.db.begin() as conn:
            query = select(citizens.c.subject_id, citizens.c.hkid).where(
                citizens.c.hkid.is_not(None))
            if twins:
                query = query.where(citizens.c.subject_id.not_in(twins))
            rows = conn.execute(query.limit(batch)).all()
            for row in rows:
                index = sealer.index(row.hkid)
                if conn.execute(select(citizens.c.subject_id).where(
                        citizens.c.hkid_index == index)).first() is not None:
                    # the same person enrolled again by a process of the release before
                    # (which looked them up by the clear column): left for the operator
                    twins.append(row.subject_id)
                    log.error("citizen %s: enrolled twice across the upgrade; left unsealed "
                              "for an operator to merge", row.subject_id)
                    continue
                conn.execute(update(citizens).where(citizens.c.subject_id == row.subject_id)
                             .values(hkid=None, hkid_index=index,
                                     hkid_sealed=sealer.seal(row.hkid, row.subject_id)))
        done += len(rows)
        if len(rows) < batch:
            return done - len(twins)


def reseal_pending(gw, batch: int = BATCH, on_batch=None) -> tuple[int, list[str]]:
    """Re-seal, under the current data key, citizens sealed under another. A row that does not
    open (tampered with) is left as it is and named in the answer, never a reason to stop."""
    sealer, done, unreadable = gw.sealer, 0, []
    sealer.load()
    prefix = sealer.current + ":"
    while True:
        with gw.db.begin() as conn:
            query = (select(citizens.c.subject_id, citizens.c.hkid_sealed)
                     .where(citizens.c.hkid_sealed.is_not(None),
                            func.substr(citizens.c.hkid_sealed, 1, len(prefix)) != prefix))
            if unreadable:
                query = query.where(citizens.c.subject_id.not_in(unreadable))
            rows = conn.execute(query.limit(batch)).all()
            for row in rows:
                try:
                    hkid = sealer.open(row.hkid_sealed, row.subject_id)
                except SealBroken:
                    unreadable.append(row.subject_id)
                    continue
                conn.execute(update(citizens).where(citizens.c.subject_id == row.subject_id,
                                                    citizens.c.hkid_sealed == row.hkid_sealed)
                             .values(hkid_sealed=sealer.seal(hkid, row.subject_id)))
        done += len(rows)
        if on_batch is not None and rows:
            on_batch(done)
        if len(rows) < batch:
            return done - len(unreadable), unreadable


def _rewrap_all(gw, previous_kek: bytes | None) -> int:
    kek, count = gw.sealer.kek, 0
    with gw.db.begin() as conn:
        for row in conn.execute(select(data_keys)).all():
            try:
                raw = _unwrap(kek, row.key_id, row.wrapped)
            except InvalidTag:
                if previous_kek is None:
                    raise ConfigError(f"data key {row.key_id}: not wrapped by CDEG_DATA_KEY; "
                                      f"give the previous key as CDEG_DATA_KEY_PREVIOUS") from None
                try:
                    raw = _unwrap(previous_kek, row.key_id, row.wrapped)
                except InvalidTag:
                    raise ConfigError(f"data key {row.key_id}: opened by neither "
                                      f"CDEG_DATA_KEY nor CDEG_DATA_KEY_PREVIOUS") from None
            conn.execute(update(data_keys).where(data_keys.c.key_id == row.key_id)
                         .values(wrapped=_wrap(kek, row.key_id, raw)))
            count += 1
    return count


def previous_kek(config) -> bytes | None:
    return _kek_from(config.data_key_previous, "CDEG_DATA_KEY_PREVIOUS") \
        if config.data_key_previous else None
