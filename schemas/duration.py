"""ISO 8601 durations as policies and consents write them (``P90D``, ``P1Y``, ``PT12H``).

Years count 365 days and months 30, which is what a consent's expiry means in practice.
"""
from __future__ import annotations

import re

_DURATION = re.compile(
    r"^P(?!$)(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?"
    r"(?:T(?=\d)(?:(\d{1,6})H)?(?:(\d{1,7})M)?(?:(\d{1,8})S)?)?$")
_UNITS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)


class InvalidDuration(ValueError):
    pass


def seconds(text) -> int:
    if not isinstance(text, str):
        raise InvalidDuration("duration must be an ISO 8601 string such as P90D")
    match = _DURATION.match(text)
    if not match:
        raise InvalidDuration(f"{text[:40]!r} is not an ISO 8601 duration such as P90D")
    total = sum(int(v) * unit for v, unit in zip(match.groups(), _UNITS) if v)
    if total <= 0:
        raise InvalidDuration("duration must be longer than zero")
    return total
