"""The one clock of the gateway. Tests move it; nothing else calls time.time() directly."""
from __future__ import annotations

import time


class Clock:
    def __init__(self):
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


_last_rfc3339: tuple[int | None, str] = (None, "")


def rfc3339(ts: int) -> str:
    """``ts`` (seconds since the epoch) as UTC, ``2026-12-06T06:30:00Z``. The last answer is
    kept: the entries and replies of one second all ask for the same one."""
    global _last_rfc3339
    last = _last_rfc3339
    if last[0] == ts:
        return last[1]
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    _last_rfc3339 = (ts, text)
    return text
