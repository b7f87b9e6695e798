"""The one clock of the gateway. Tests move it; nothing else calls time.time() directly."""
from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    def __init__(self):
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
