"""ISO 8601 durations as policies and consents write them (``P90D``, ``P1Y``, ``PT12H``).

Years count 365 days and months 30, which is what a consent's expiry means in practice.
"""
from __future__ import annotations

import re

# Matched with fullmatch (``$`` would let a trailing newline through) and ASCII digits only
# (``\d`` would take any script's digits, which int() then reads: "P٩٠D" is 90 days).
_DURATION = re.compile(
    r"P(?!\Z)(?:([0-9]{1,4})Y)?(?:([0-9]{1,4})M)?(?:([0-9]{1,4})W)?(?:([0-9]{1,5})D)?"
    r"(?:T(?=[0-9])(?:([0-9]{1,6})H)?(?:([0-9]{1,7})M)?(?:([0-9]{1,8})S)?)?", re.ASCII)
_UNITS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)


class InvalidDuration(ValueError):
    pass


def seconds(text) -> int:
    if not isinstance(text, str):
        raise InvalidDuration("duration must be an ISO 8601 string such as P90D")
    match = _DURATION.fullmatch(text)
    if not match:
        raise InvalidDuration(f"{text[:40]!r} is not an ISO 8601 duration such as P90D")
    total = sum(int(v) * unit for v, unit in zip(match.groups(), _UNITS) if v)
    if total <= 0:
        raise InvalidDuration("duration must be longer than zero")
    return total
