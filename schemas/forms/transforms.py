"""The named transforms a form field may apply to its catalogue item's value, where the form's
shape differs from the item's. A form file can only name these; each is a pure function of the
value and raises ``Unshapeable`` when the value cannot take the form's shape (the field is then
reported missing, never filled with something else)."""
from __future__ import annotations

import re
from collections.abc import Callable

REGION_NAMES = {"HK": "Hong Kong", "KLN": "Kowloon", "NT": "New Territories"}


class Unshapeable(ValueError):
    """The value cannot be put in the form's shape."""


def _name_parts(name) -> tuple[str, str]:
    """An English name as ImmD writes it, "CHAN, Tai Man" (or "CHAN Tai Man"): surname, given."""
    if not isinstance(name, str) or not name.strip():
        raise Unshapeable("no English name")
    if "," in name:
        surname, _, given = name.partition(",")
    else:
        surname, _, given = name.strip().partition(" ")
    surname, given = surname.strip(), " ".join(given.split())
    if not surname or not given:
        raise Unshapeable("the English name has no surname and given names to split")
    return surname, given


def surname(name) -> str:
    return _name_parts(name)[0]


def given_names(name) -> str:
    return _name_parts(name)[1]


_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")


def date_dd_mm_yyyy(value) -> str:
    """1985-03-14 → 14/03/1985, as Hong Kong forms write dates."""
    match = _ISO_DATE.match(value) if isinstance(value, str) else None
    if not match:
        raise Unshapeable("not a date")
    year, month, day = match.groups()
    return f"{day}/{month}/{year}"


def _join(*parts) -> str:
    return ", ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def _address(value) -> dict:
    if not isinstance(value, dict) or not value.get("district"):
        raise Unshapeable("not a structured address")
    return value


def _unit(a: dict) -> str:
    """Flat, floor and block as one line: "Flat 12A, 12/F, Block 3" ("" when none is given)."""
    flat, floor = (a.get("flat") or "").strip(), (a.get("floor") or "").strip()
    if flat and not re.match(r"(?i)(flat|room|rm|unit|shop)\b|.*[室房]$", flat):
        flat = f"Flat {flat}"           # "12A" → "Flat 12A"; "Flat 12A", "Room 3", "12室" kept
    if floor and not re.search(r"(?i)(/f|floor|樓|層)$", floor) and not re.match(r"(?i)g/f", floor):
        floor = f"{floor}/F"            # "12" → "12/F"; "12/F", "G/F", "12樓" kept
    return _join(flat, floor, a.get("block"))


def _first_two_lines(value) -> tuple[str, str]:
    """An address's first two lines: the unit, then building and street; an address with no
    unit (a village house, a whole building) moves up: the building, then the street."""
    a = _address(value)
    unit, place = _unit(a), [p for p in (a.get("building"), a.get("street"))
                             if isinstance(p, str) and p.strip()]
    lines = [unit, _join(*place)] if unit else [place[0] if place else "", _join(*place[1:])]
    if not lines[0]:
        raise Unshapeable("the address has no unit, building or street")
    return lines[0], lines[1]


def address_line_1(value) -> str:
    """Flat, floor and block: "Flat 12A, 12/F, Block 3" (or the building when none is given)."""
    return _first_two_lines(value)[0]


def address_line_2(value) -> str:
    """Building and street: "Mei Foo Sun Chuen, 1 Broadway" (or the street, moved up)."""
    line = _first_two_lines(value)[1]
    if not line:
        raise Unshapeable("the address has nothing for a second line")
    return line


def address_line_3(value) -> str:
    """District and region: "Sham Shui Po, Kowloon"."""
    a = _address(value)
    return _join(a["district"], REGION_NAMES.get(a.get("region"), a.get("region")))


_MOBILE = re.compile(r"(?:\+852)?([4-9][0-9]{7})\Z")


def local_mobile(value) -> str:
    """+852 9123 4567 → 91234567: a Hong Kong mobile without its country code."""
    digits = re.sub(r"[ -]", "", value) if isinstance(value, str) else ""
    match = _MOBILE.match(digits)
    if not match:
        raise Unshapeable("not a Hong Kong mobile number")
    return match.group(1)


TRANSFORMS: dict[str, Callable] = {
    "surname": surname, "given_names": given_names, "date_dd_mm_yyyy": date_dd_mm_yyyy,
    "address_line_1": address_line_1, "address_line_2": address_line_2,
    "address_line_3": address_line_3, "local_mobile": local_mobile,
}
