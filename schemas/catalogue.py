"""The catalogue of data items (schemas/catalogue.yaml), loaded once."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CATALOGUE_FILE = Path(__file__).with_name("catalogue.yaml")


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict]:
    return yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))["items"]


def label(item_id: str, lang: str) -> str:
    entry = catalogue().get(item_id, {})
    return entry.get("label", {}).get(lang) or entry.get("label", {}).get("en") or item_id
