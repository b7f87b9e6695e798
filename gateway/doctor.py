"""``cdeg doctor``: checks a deployment and says, one line each, what holds and what does not —
the schema at head, Redis reachable and keeping its data, the signing keys present and private,
every policy and form valid, the department services answering. Exit 1 when any fails."""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

Check = tuple[str, bool, str]   # (name, held, what was found)


def _schema(gw) -> Check:
    from gateway.store import db
    current, head = db.current_revision(gw.db.engine), db.head_revision()
    if current == head:
        return "schema", True, f"at the newest revision ({head})"
    return "schema", False, f"at {current or 'nothing'}, not {head}: run `cdeg db upgrade`"


def _redis(gw) -> Check:
    if gw.redis.embedded:
        held = gw.config.demo
        return "redis", held, ("the in-process stand-in (demo only: nothing survives a restart)"
                               if held else "the in-process stand-in: set CDEG_REDIS_URL")
    if not gw.redis.ping():
        return "redis", False, "does not answer at CDEG_REDIS_URL"
    kept = gw.redis.persistence()
    if kept is None:
        return "redis", False, ("answers, but keeps nothing across a restart: turn on "
                                "appendonly (queues and replay guards live there)")
    return "redis", True, f"answers, keeps its data ({kept})"


def _keys(gw) -> Check:
    folder = Path(gw.config.instance_dir) / "keys"
    pems = sorted(folder.glob("*.pem"))
    if not pems:
        return "keys", False, f"no signing key in {folder}"
    loose = [p.name for p in pems if stat.S_IMODE(os.stat(p).st_mode) & 0o077]
    if stat.S_IMODE(os.stat(folder).st_mode) & 0o077:
        loose.append(f"{folder.name}/ (the folder)")
    if loose:
        return "keys", False, f"readable by others: {', '.join(loose)} (chmod 600, folder 700)"
    return "keys", True, f"{len(pems)} key(s), readable by this user alone; signing with " \
                         f"{gw.keyring.signing_key.get('kid')}"


def _policies(gw) -> Check:
    from gateway.requester_registry import check_stored_policies
    from policies.engine import PolicyError
    from schemas.forms import FormError, forms
    try:
        found = forms()
        with gw.reads.connect() as conn:
            check_stored_policies(conn)
    except (PolicyError, FormError) as exc:
        return "policies and forms", False, str(exc)
    return "policies and forms", True, f"every registered policy valid; {len(found)} forms"


def _departments(gw) -> Check:
    from gateway.demo.seed import DEMO_CITIZEN_HKID
    from gateway.errors import SourceUnavailable
    if gw.config.departments_url:      # never a citizen's identifier to a real service: health
        import requests
        url = gw.config.departments_url.rstrip("/") + "/healthz"
        try:
            status = gw.departments.session.get(url, timeout=gw.config.connector_timeout,
                                                allow_redirects=False).status_code
        except requests.RequestException as exc:
            return "departments", False, f"{url}: no answer ({type(exc).__name__})"
        return "departments", status == 200, f"{url} answered {status}"
    where = "in this process (mock)"
    try:
        for source in gw.router.connectors:
            try:
                gw.router.ask(source, "fetch", DEMO_CITIZEN_HKID, [])
            except SourceUnavailable:
                raise
            except Exception:  # noqa: BLE001 - a 404 for a citizen it does not hold: it answered
                pass
    except SourceUnavailable as exc:
        return "departments", False, f"{where}: {exc.detail}"
    return "departments", True, f"{where}: {', '.join(gw.router.connectors)} answer"


CHECKS: list[Callable] = [_schema, _redis, _keys, _policies, _departments]


def run(gw) -> Iterator[Check]:
    for check in CHECKS:
        try:
            yield check(gw)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
            yield check.__name__.strip("_"), False, f"could not be checked: {type(exc).__name__}"
