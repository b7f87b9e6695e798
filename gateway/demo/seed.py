"""Load the demo data into an instance (refused in production)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from sqlalchemy import func, select

from gateway import citizens
from gateway import requester_registry
from gateway.store.db import requesters
from policies.engine import POLICY_DIR, load_file

HERE = Path(__file__).parent
DEMO_CITIZEN_HKID = "A1234563"       # CHAN Tai Man, A123456(3)
DEMO_CALLBACK = "/demo/callback"      # the /demo console's redirect URI, under the issuer


class DemoRefused(Exception):
    pass


def demo_requesters() -> list[dict]:
    return yaml.safe_load((HERE / "requesters.yaml").read_text(encoding="utf-8"))


def private_jwks(client_id: str) -> dict:
    return json.loads((HERE / "requesters" / f"{client_id}.private.jwks.json").read_text())


def public_jwks(client_id: str) -> dict:
    keys = []
    for key in private_jwks(client_id)["keys"]:
        keys.append({k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi")})
    return {"keys": keys}


def console_callback(gw) -> list[str]:
    """The /demo console's redirect URI under this issuer, when it can be registered (an https
    issuer, or http on a loopback host); none otherwise, and /demo says so."""
    uri = gw.config.issuer + DEMO_CALLBACK
    try:
        requester_registry.check_redirect_uri(uri, demo=gw.config.demo)
    except requester_registry.RequesterError:
        return []
    return [uri]


def is_empty(gw) -> bool:
    with gw.db.connect() as conn:
        return conn.execute(select(func.count()).select_from(requesters)).scalar() == 0


def seed(gw) -> list[str]:
    if gw.config.production:
        raise DemoRefused("demo data is refused under CDEG_ENV=production")
    done = []
    with gw.transaction() as conn:
        now = gw.clock.now()
        for entry in demo_requesters():
            requester_registry.register(conn, now, client_id=entry["client_id"], name=entry["name"],
                                name_zh=entry.get("name_zh"), kind=entry["kind"],
                                jwks=public_jwks(entry["client_id"]),
                                redirect_uris=[*entry["redirect_uris"],
                                               *console_callback(gw)],
                                demo=gw.config.demo,
                                callback_urls=entry.get("callback_urls"),
                                policy=load_file(POLICY_DIR / entry["policy"]))
            done.append(entry["client_id"])
        citizens.enrol(conn, now, DEMO_CITIZEN_HKID, gw.sealer)
    return done
