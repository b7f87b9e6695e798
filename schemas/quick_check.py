"""A marshmallow schema's ``load``, compiled into plain checks for the data path's replies.

The department replies (``schemas/departments.py``) are marshmallow schemas, and stay the one
definition. Loading one through marshmallow costs about 40 µs of CPU, three times per data call.
``QuickCheck(schema).load(data)`` answers the same in about a tenth of that, with the checks
read from the schema's own fields and validators once:

- it accepts only the plainest form of each value (a ``str`` for a String, ``True``/``False``
  for a Boolean, a ``dict`` for a Nested schema, ``None`` where the field allows it), and
  answers what marshmallow would answer for it — a new dict, the declared fields in their
  order, unknown keys left out (``EXCLUDE``);
- anything else — a wrong type, a value a validator refuses, a missing required field, a bytes
  value marshmallow would decode — goes to ``schema.load`` itself, so every error (and every
  more lenient acceptance) is marshmallow's own, word for word.

Only what the replies use can be compiled: String, Boolean and Nested fields, the Regexp,
Length and OneOf validators, and no hooks, ``data_key``, ``attribute``, ``load_default`` or
field processors. A schema with anything else is refused when it is compiled (``TypeError``),
never checked less. ``tests/test_quick_check.py`` compares the two on generated replies.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from marshmallow import EXCLUDE, Schema, fields, validate
from marshmallow.utils import missing

_FALLBACK = object()      # "not plainly valid: ask marshmallow"


def _validator(v: validate.Validator) -> Callable[[object], bool]:
    if type(v) is validate.Regexp:
        match = v.regex.match
        return lambda value: match(value) is not None
    if type(v) is validate.Length:
        low, high, equal = v.min, v.max, v.equal
        if equal is not None:
            return lambda value: len(value) == equal
        return lambda value: (low is None or len(value) >= low) and \
            (high is None or len(value) <= high)
    if type(v) is validate.OneOf:
        choices = frozenset(v.choices)
        return lambda value: value in choices
    raise TypeError(f"cannot compile the validator {v!r}")


def _field(name: str, field: fields.Field) -> Callable[[object], object]:
    if field.data_key not in (None, name) or field.attribute not in (None, name) \
            or field.load_default is not missing or field.pre_load or field.post_load:
        raise TypeError(f"cannot compile the field {name!r}: it renames, defaults or transforms")
    allow_none = field.allow_none
    checks = tuple(_validator(v) for v in field.validators)
    if type(field) is fields.String:
        plain = str
    elif type(field) is fields.Boolean and field.truthy == fields.Boolean.truthy \
            and field.falsy == fields.Boolean.falsy:   # True and False load as themselves
        plain = bool
    elif type(field) is fields.Nested and not field.many and isinstance(field.schema, Schema) \
            and field.unknown in (None, EXCLUDE):      # the field may not make unknown keys fail
        nested = QuickCheck(field.schema).checked

        def check(value):
            if value is None:
                return None if allow_none else _FALLBACK
            out = nested(value)
            if out is not _FALLBACK:
                for ok in checks:
                    if not ok(out):
                        return _FALLBACK
            return out
        return check
    else:
        raise TypeError(f"cannot compile the field {name!r} ({type(field).__name__})")

    def check(value):   # a str for a String, True or False for a Boolean, as it was sent
        if type(value) is not plain:
            return None if value is None and allow_none else _FALLBACK
        for ok in checks:
            if not ok(value):
                return _FALLBACK
        return value
    return check


class QuickCheck:
    """``schema.load(data)``, answered quickly when ``data`` is plainly valid (see above)."""

    def __init__(self, schema: Schema):
        if schema.many or schema.unknown != EXCLUDE or schema.partial or schema.only \
                or schema.exclude or any(schema._hooks.values()):
            raise TypeError(f"cannot compile {type(schema).__name__}: only single-object "
                            "schemas that exclude unknown keys, with no hooks")
        self.schema = schema
        self.fields = tuple((name, field.required, _field(name, field))
                            for name, field in schema.load_fields.items())

    def checked(self, data) -> object:
        """The loaded dict, or ``_FALLBACK`` when ``data`` is not plainly valid."""
        if type(data) is not dict:
            return _FALLBACK
        out = {}
        for name, required, check in self.fields:
            if name not in data:
                if required:
                    return _FALLBACK
                continue
            value = check(data[name])
            if value is _FALLBACK:
                return _FALLBACK
            out[name] = value
        return out

    def load(self, data: Mapping) -> dict:
        out = self.checked(data)
        return self.schema.load(data) if out is _FALLBACK else out
