"""Each rule has one home: nothing but gateway/tokens/token_rows.py writes the tokens table,
nothing but gateway/consent/liveness.py spells out when a consent is live, nothing but
gateway/rate_limits.py counts a rate limit, nothing but gateway/exchange/release.py records a
release, nothing but gateway/jobs/outbox.py writes the outbox, and nothing but
gateway/runtime.py reaches the running gateway."""
from __future__ import annotations

import re
from pathlib import Path

SOURCES = [p for p in Path(__file__).resolve().parent.parent.joinpath("gateway").rglob("*.py")]


def _offenders(pattern: str, *homes: str) -> list[str]:
    found = []
    for path in SOURCES:
        if path.as_posix().endswith(homes):
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


def test_only_the_rate_limits_module_counts_a_limit():
    assert _offenders(r"redis\.(hit|take|claim_once_and_hit|take_units|return_units)\(",
                      "gateway/rate_limits.py") == []


def test_only_the_release_module_records_a_release():
    assert _offenders(r"release_keys\.insert|\"data\.released\",|release_(sql|prepared)\(",
                      "gateway/exchange/release.py", "gateway/audit/entries.py") == []


def test_only_the_outbox_module_writes_the_outbox():
    assert _offenders(r"insert\(outbox\)|update\(outbox\)|outbox\.insert\(|outbox\.delete\(",
                      "gateway/jobs/outbox.py") == []


def test_only_the_runtime_module_reaches_the_running_gateway():
    assert _offenders(r"extensions\[|current_gateway|Gateway\(Config\.from_env",
                      "gateway/runtime.py") == []


def test_only_the_redis_store_talks_to_redis_so_its_errors_are_mapped_in_one_place():
    assert _offenders(r"redis\.client\.(get|set|delete|expire|incr|hincrby|pipeline)\(|RedisError",
                      "gateway/store/redis.py") == []
