"""Forms as data: one YAML file per form in this folder, validated when first loaded (the
gateway loads them at start-up), with errors that name the file and the key.

    form_id: vehicle-licence-renewal              # the file's name, without .yaml
    title: {en: "...", zh-HK: "..."}
    fields:
      - name: surname                             # unique in the form
        label: {en: Surname, zh-HK: 姓}
        item: identity.name_en                    # a catalogue item
        transform: surname                        # optional: a name from transforms.TRANSFORMS
        required: true
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

from schemas.catalogue import catalogue

from .transforms import TRANSFORMS

FORMS_DIR = Path(__file__).parent
FORM_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
FORM_KEYS = {"form_id", "title", "fields"}
FIELD_KEYS = {"name", "label", "item", "transform", "required"}


class FormError(Exception):
    def __init__(self, message: str, *, where: str):
        super().__init__(f"{where}: {message}")
        self.where = where


def _texts(value) -> bool:
    return isinstance(value, dict) and set(value) == {"en", "zh-HK"} and \
        all(isinstance(v, str) and v.strip() for v in value.values())


def validate(doc, *, source: str) -> dict:
    """A form definition checked key by key; FormError names ``source`` and the key."""
    def fail(key: str, message: str):
        raise FormError(message, where=f"{source}: {key}" if key else source)

    if not isinstance(doc, dict):
        fail("", "a form is a mapping with form_id, title and fields")
    for key in sorted(map(str, set(doc) - FORM_KEYS)):
        fail(key, "unknown key")
    for key in sorted(FORM_KEYS - set(doc)):
        fail(key, "missing")
    if not isinstance(doc["form_id"], str) or not FORM_ID.fullmatch(doc["form_id"]):
        fail("form_id", "lower-case letters, digits and dashes")
    if not _texts(doc["title"]):
        fail("title", "needs en and zh-HK text, and nothing else")
    if not isinstance(doc["fields"], list) or not doc["fields"]:
        fail("fields", "must list at least one field")
    known, fields, names = catalogue(), [], set()
    for i, spec in enumerate(doc["fields"]):
        at = f"fields[{i}]"
        if not isinstance(spec, dict):
            fail(at, "must be a mapping")
        for key in sorted(map(str, set(spec) - FIELD_KEYS)):
            fail(f"{at}.{key}", "unknown key")
        for key in sorted({"name", "label", "item"} - set(spec)):
            fail(f"{at}.{key}", "missing")
        name = spec["name"]
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            fail(f"{at}.name", "lower-case letters, digits and underscores, starting with a letter")
        if name in names:
            fail(f"{at}.name", f"{name!r} is already a field of this form")
        names.add(name)
        if not _texts(spec["label"]):
            fail(f"{at}.label", "needs en and zh-HK text, and nothing else")
        if not isinstance(spec["item"], str) or spec["item"] not in known:
            fail(f"{at}.item", f"unknown data item {spec['item']!r}")
        transform = spec.get("transform")
        if transform is not None and (not isinstance(transform, str)
                                      or transform not in TRANSFORMS):
            fail(f"{at}.transform", f"unknown transform {transform!r} (known: "
                                    f"{', '.join(sorted(TRANSFORMS))})")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            fail(f"{at}.required", "true or false")
        fields.append({"name": name, "label": dict(spec["label"]), "item": spec["item"],
                       "transform": transform, "required": required})
    return {"form_id": doc["form_id"], "title": dict(doc["title"]), "fields": fields}


def load_file(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FormError(f"cannot read: {exc}", where=str(path)) from exc
    form = validate(doc, source=str(path))
    if form["form_id"] != path.stem:
        raise FormError(f"form_id {form['form_id']!r} is not the file's name",
                        where=f"{path}: form_id")
    return form


def load_folder(folder: Path) -> dict[str, dict]:
    return {form["form_id"]: form
            for form in (load_file(p) for p in sorted(folder.glob("*.yaml")))}


@lru_cache(maxsize=1)
def forms() -> dict[str, dict]:
    """The gateway's forms, by form_id, loaded once."""
    return load_folder(FORMS_DIR)
