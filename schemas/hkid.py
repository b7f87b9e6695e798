"""The Hong Kong Identity Card number and its check character.

After upper-casing, the form is one or two letters, six digits and a check character (digit or
``A``), the brackets optional. The check: pad the letters to two with a space (value 36), A-Z
are 10-35, weights 9..2 over the 8 characters; check = (11 - sum mod 11) mod 11, 10 written A.
"""
from __future__ import annotations

import re

# fullmatch, ASCII only: no trailing newline (``$`` allows one), no other script's digits.
_HKID = re.compile(r"([A-Z]{1,2})([0-9]{6})\(?([0-9A])\)?", re.ASCII)


class InvalidHKID(ValueError):
    pass


def _value(ch: str) -> int:
    if ch == " ":
        return 36
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    return int(ch)


def check_character(prefix: str, digits: str) -> str:
    chars = prefix.rjust(2, " ") + digits
    total = sum(w * _value(c) for w, c in zip(range(9, 1, -1), chars))
    check = (11 - total % 11) % 11
    return "A" if check == 10 else str(check)


def normalise(raw) -> str:
    """Answer the canonical form ``A1234563`` or raise InvalidHKID."""
    if not isinstance(raw, str) or len(raw) > 16 or not raw.isascii():
        raise InvalidHKID("HKID must be like A123456(3)")
    # Spaces typed around the number are forgiven; a newline, tab or other control is not.
    match = _HKID.fullmatch(raw.strip(" ").upper())
    if not match:
        raise InvalidHKID("HKID must be like A123456(3)")
    prefix, digits, check = match.groups()
    if "(" in raw and ")" not in raw or ")" in raw and "(" not in raw:
        raise InvalidHKID("HKID must be like A123456(3)")
    if check_character(prefix, digits) != check:
        raise InvalidHKID("HKID check digit does not match")
    return prefix + digits + check


def display(canonical: str) -> str:
    return f"{canonical[:-1]}({canonical[-1]})"


