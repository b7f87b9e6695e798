"""Each rule has one home: nothing but gateway/tokens/token_rows.py writes the tokens table, and
nothing but gateway/consent/liveness.py spells out when a consent is live."""
from __future__ import annotations

import re
from pathlib import Path

SOURCES = [p for p in Path(__file__).resolve().parent.parent.joinpath("gateway").rglob("*.py")]


def _offenders(pattern: str, home: str) -> list[str]:
    found = []
    for path in SOURCES:
        if path.as_posix().endswith(home):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{path.name}:{n}: {line.strip()}")
    return found


def test_only_the_token_rows_module_writes_the_tokens_table():
    assert _offenders(r"tokens\.insert\(|update\(tokens\)|delete\(tokens\)|UPDATE tokens|"
                      r"INSERT INTO tokens", "gateway/tokens/token_rows.py") == []


def test_only_the_liveness_module_says_when_a_consent_is_live():
    assert _offenders(r"consents\.c\.expires_at\s*[<>]|consent\[\"expires_at\"\]\s*[<>]|status\s*=\s*'approved'|"
                      r"Status\.APPROVED\.value\s*(==|!=)|== *Status\.APPROVED\b",
                      "gateway/consent/liveness.py") == []
