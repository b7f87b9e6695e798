"""A department's pre-filled form (SPEC section 4): a data release in the same steps as the data
API — the grant, ``decide``, the sources, ``record`` with route ``form`` — then each field shaped
from its item's value. A field is filled only from an item that is consented, allowed by the
requester's policy and held by its source; any other field is ``missing``, never filled with
something else. The form itself must be one the requester's policy names for the consent's
purpose."""
from __future__ import annotations

from gateway.errors import FormNotAllowed, UnknownForm
from gateway.exchange import release
from gateway.tokens.access import VerifiedClaims
from policies.engine import allowed_forms
from schemas.forms import forms
from schemas.forms.transforms import TRANSFORMS, Unshapeable


def definition(form_id: str) -> dict:
    form = forms().get(form_id)
    if form is None:
        raise UnknownForm(f"no form {form_id!r}")
    return form


def listing() -> list[dict]:
    return [{"form_id": f["form_id"], "title": f["title"],
             "fields": [{k: field[k] for k in ("name", "label", "item", "required")}
                        for field in f["fields"]]}
            for f in forms().values()]


def prefill(gw, claims: VerifiedClaims, form_id: str) -> dict:
    form = definition(form_id)
    grant = release.live_grant(gw, claims)     # read fresh: the answer may release nothing
    permitted = release.decide(grant, None, gw.clock.now())   # refused as the data API refuses
    if form_id not in allowed_forms(grant.policy, grant.purpose):
        raise FormNotAllowed(f"the requester's policy does not name form {form_id!r} for "
                             f"purpose {grant.purpose!r}")
    wanted = {field["item"] for field in form["fields"]}
    items = [item for item in permitted if item in wanted]
    values = gw.router.fetch(grant.hkid, items) if items else {}
    fields, missing = [], []
    for field in form["fields"]:
        value = values.get(field["item"])
        shaped = _shaped(field, value["value"]) if value is not None else None
        if shaped is None:
            missing.append(field["name"])
            continue
        fields.append({"name": field["name"], "label": field["label"], "value": shaped,
                       "item": field["item"], "source": value["source"],
                       "verified": value["verified"], "as_of": value["as_of"]})
    released = sorted({f["item"] for f in fields})   # what leaves: items some field shows
    if released:
        release.record(gw, grant, released, route="form")
    return {"form_id": form_id, "consent_id": grant.consent_id, "subject": grant.subject,
            "fields": fields, "missing": missing}


def _shaped(field: dict, value):
    if field["transform"] is None:
        return value
    try:
        return TRANSFORMS[field["transform"]](value)
    except Unshapeable:
        return None
