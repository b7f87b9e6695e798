"""Load and validate policy files; decide what a requester may ask for.

A policy file is read by a data protection officer, not a programmer, so every error names the
file and the key path (``policies/bank.yaml: purposes.ekyc.items.required[2]: unknown data item
'identity.shoe_size'``). A validated policy is a plain dict; it is stored with the requester's
registration, so narrowing it (``cdeg clients register`` again) narrows live consents at the
next call: what leaves the gateway is always consented ∩ allowed.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from schemas.catalogue import catalogue
from schemas.duration import InvalidDuration, seconds
from schemas.forms import forms

POLICY_DIR = Path(__file__).parent
ACCESS_KINDS = ("once", "ongoing")
PURPOSE_KEYS = {"description", "legal_basis", "items", "access", "max_duration", "retention"}
OPTIONAL_PURPOSE_KEYS = {"forms"}     # the pre-filled forms (schemas/forms/) the purpose may pull
LEGAL_BASES = ("consent", "legal_obligation", "public_task", "contract")
# what PAR accepts as a purpose (schemas/authorization.py); ASCII only: str.isalnum() would also
# take other scripts' letters and digits, a purpose no request could ever name
PURPOSE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}", re.ASCII)


class PolicyError(Exception):
    """A request lies outside the requester's policy, or a policy file is wrong."""

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


def load_file(path: Path | str) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read: {exc}", where=str(path)) from exc
    return validate(raw, source=str(path))


def validate(doc, *, source: str = "policy") -> dict:
    def fail(key: str, message: str):
        raise PolicyError(message, where=f"{source}: {key}" if key else source)

    if not isinstance(doc, dict):
        fail("", "a policy is a mapping with 'requester' and 'purposes'")
    unknown = set(doc) - {"requester", "purposes"}
    if unknown:
        fail(sorted(map(str, unknown))[0], "unknown key")
    requester = doc.get("requester")
    if not isinstance(requester, str) or not requester:
        fail("requester", "must name the client_id this policy governs")
    purposes = doc.get("purposes")
    if not isinstance(purposes, dict) or not purposes:
        fail("purposes", "must list at least one purpose")
    known = catalogue()
    clean: dict = {"requester": requester, "purposes": {}}
    for pid, spec in purposes.items():
        at = f"purposes.{pid}"
        if not isinstance(pid, str) or not PURPOSE_ID.fullmatch(pid):
            fail(at, "a purpose id is lower-case letters, digits and dashes")
        if not isinstance(spec, dict):
            fail(at, "must be a mapping")
        for key in sorted(map(str, set(spec) - PURPOSE_KEYS - OPTIONAL_PURPOSE_KEYS)):
            fail(f"{at}.{key}", "unknown key")
        for key in sorted(PURPOSE_KEYS - set(map(str, spec))):
            fail(f"{at}.{key}", "missing")
        desc = spec["description"]
        if not isinstance(desc, dict) or not all(isinstance(desc.get(k), str) and desc[k]
                                                 for k in ("en", "zh-HK")):
            fail(f"{at}.description", "needs both en and zh-HK text")
        if spec["legal_basis"] not in LEGAL_BASES:
            fail(f"{at}.legal_basis", f"must be one of {', '.join(LEGAL_BASES)}")
        items = spec["items"]
        if not isinstance(items, dict) or set(items) - {"required", "optional"}:
            fail(f"{at}.items", "has only 'required' and 'optional' lists")
        required = items.get("required") or []
        optional = items.get("optional") or []
        for group, values in (("required", required), ("optional", optional)):
            if not isinstance(values, list):
                fail(f"{at}.items.{group}", "must be a list")
            for i, item in enumerate(values):
                if not isinstance(item, str) or item not in known:
                    fail(f"{at}.items.{group}[{i}]", f"unknown data item {item!r}")
        if not required and not optional:
            fail(f"{at}.items", "lists no data item")
        access = spec["access"]
        if not isinstance(access, list) or not access or any(a not in ACCESS_KINDS for a in access):
            fail(f"{at}.access", "must list once and/or ongoing")
        for key in ("max_duration", "retention"):
            try:
                seconds(spec[key])
            except InvalidDuration as exc:
                fail(f"{at}.{key}", str(exc))
        named_forms = spec.get("forms", [])
        if not isinstance(named_forms, list):
            fail(f"{at}.forms", "must be a list of form ids")
        for i, form_id in enumerate(named_forms):
            if not isinstance(form_id, str) or form_id not in forms():
                fail(f"{at}.forms[{i}]", f"unknown form {form_id!r}")
            if not {f["item"] for f in forms()[form_id]["fields"]} & (set(required) | set(optional)):
                fail(f"{at}.forms[{i}]", f"the purpose lists none of the items form "
                                         f"{form_id!r} is filled from")   # it would stay empty
        clean["purposes"][pid] = {
            "description": {"en": desc["en"], "zh-HK": desc["zh-HK"]},
            "legal_basis": spec["legal_basis"],
            "items": {"required": list(required), "optional": list(optional)},
            "access": list(access),
            "max_duration": spec["max_duration"],
            "retention": spec["retention"],
            "forms": list(named_forms),
        }
    return clean


def check_request(policy: dict | None, detail: dict) -> None:
    """Refuse (PolicyError naming the purpose or item) a request the policy does not allow."""
    if not policy:
        raise PolicyError("the requester has no policy; it may not ask for data")
    purpose = policy["purposes"].get(detail["purpose"])
    if purpose is None:
        raise PolicyError(f"purpose {detail['purpose']!r} is not in the requester's policy")
    allowed = set(purpose["items"]["required"]) | set(purpose["items"]["optional"])
    for item in detail["data_items"]:
        if item not in catalogue():
            raise PolicyError(f"unknown data item {item!r}")
        if item not in allowed:
            raise PolicyError(f"data item {item!r} is not allowed for purpose {detail['purpose']!r}")
    missing = [i for i in purpose["items"]["required"] if i not in detail["data_items"]]
    if missing:
        raise PolicyError(f"purpose {detail['purpose']!r} requires data item {missing[0]!r}")
    if detail["access"] not in purpose["access"]:
        raise PolicyError(f"access {detail['access']!r} is not allowed for purpose {detail['purpose']!r}")
    if "duration" in detail and seconds(detail["duration"]) > seconds(purpose["max_duration"]):
        raise PolicyError(f"duration {detail['duration']} is longer than the policy's "
                          f"max_duration {purpose['max_duration']}")


def allowed_items(policy: dict | None, purpose_id: str) -> set[str]:
    """What the policy allows now for a purpose (empty when the purpose was withdrawn)."""
    if not policy:
        return set()
    purpose = policy["purposes"].get(purpose_id)
    if purpose is None:
        return set()
    return set(purpose["items"]["required"]) | set(purpose["items"]["optional"])


def check_consent(policy: dict | None, consent: dict, now: int) -> None:
    """Refuse (PolicyError) a live consent that the policy, as it reads now, no longer allows in
    kind or length: its purpose withdrawn, its access kind (once/ongoing) no longer listed, or
    it has run longer than the purpose's max_duration now allows (counted from the approval).
    Its items are narrowed separately (``allowed_items``): what leaves is consented ∩ allowed."""
    purpose = (policy or {}).get("purposes", {}).get(consent["purpose"])
    if purpose is None:
        raise PolicyError(f"purpose {consent['purpose']!r} is no longer in the requester's policy")
    if consent["access"] not in purpose["access"]:
        raise PolicyError(f"the requester's policy no longer allows {consent['access']} access "
                          f"for purpose {consent['purpose']!r}")
    approved = consent.get("decided_at")
    if approved is not None and now >= approved + seconds(purpose["max_duration"]):
        raise PolicyError(f"the consent has run longer than the policy's max_duration "
                          f"{purpose['max_duration']} for purpose {consent['purpose']!r}")


def max_duration_seconds(policy: dict, purpose_id: str) -> int:
    return seconds(policy["purposes"][purpose_id]["max_duration"])


def allowed_forms(policy: dict | None, purpose_id: str) -> list[str]:
    """The forms the policy lets a consent of this purpose pre-fill (none once withdrawn)."""
    purpose = (policy or {}).get("purposes", {}).get(purpose_id)
    return list(purpose.get("forms", [])) if purpose else []
