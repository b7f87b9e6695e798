"""The consent lifecycle as a table: from a state, which events lead where.

    requested ──approve──> approved ──revoke──> revoked
        │                     └──────expire───> expired
        ├──decline──> declined
        └──expire───> expired     (the citizen never answered)
"""
from __future__ import annotations

from enum import Enum

from gateway.errors import ConsentError, ConsentNotFound, TransitionRefused

__all__ = ["Status", "TRANSITIONS", "next_status", "ConsentError", "ConsentNotFound",
           "TransitionRefused"]


class Status(str, Enum):
    REQUESTED = "requested"
    APPROVED = "approved"
    DECLINED = "declined"
    REVOKED = "revoked"
    EXPIRED = "expired"


TRANSITIONS: dict[tuple[Status, str], Status] = {
    (Status.REQUESTED, "approved"): Status.APPROVED,
    (Status.REQUESTED, "declined"): Status.DECLINED,
    (Status.REQUESTED, "expired"): Status.EXPIRED,
    (Status.APPROVED, "revoked"): Status.REVOKED,
    (Status.APPROVED, "expired"): Status.EXPIRED,
}


def next_status(current: str, event: str) -> Status:
    try:
        return TRANSITIONS[(Status(current), event)]
    except (KeyError, ValueError) as exc:
        raise TransitionRefused(f"a {current} consent cannot be {event}") from exc
