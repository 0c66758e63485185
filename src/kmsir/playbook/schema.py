"""The playbook JSON Schema, generated from the models: editors check and complete playbooks
with it (the ``# yaml-language-server: $schema=...`` first line of every shipped playbook).

Built from pydantic's schema of ``Playbook``, plus one conditional per action of the catalog
it is given (``if action == X then with: <X's params>``): the playbook layer does not know the
action registry, so the command line passes it in, as it does for validation. A parameter may
hold a template (``"{{ steps.snapshot.key_id }}"``) instead of a value of its type, as the
loader allows: it checks templated parameters once they are rendered, at run time.

What the schema cannot say is left to ``kmsir validate``: templates and ``when:`` syntax,
references to steps that run earlier, duplicate step ids, rules across parameters.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kmsir.playbook.model import ActionCatalog, Playbook

#: The JSON Schema dialect pydantic writes.
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where the schema is committed, relative to the project root; how to regenerate it.
COMMITTED = "schema/playbook.schema.json"
REGENERATE = f"kmsir schema --out {COMMITTED}"

#: The definition of "a value holding a template": a string with ``{{`` or ``{%``, or a list
#: or mapping with such a string somewhere inside (what the loader leaves to run time).
_TEMPLATED = "TemplatedValue"
_DEFS = "#/$defs/"
# JSON Schema keywords that describe a property rather than constrain it: they stay on the
# property when its constraint is widened to "this, or a template"
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


def playbook_schema(catalog: ActionCatalog) -> dict[str, Any]:
    """The JSON Schema of a playbook whose steps use the actions of ``catalog``."""
    names = sorted(catalog)
    models: list[type[BaseModel]] = [Playbook]
    models += sorted({catalog[n] for n in names}, key=lambda m: (m.__module__, m.__qualname__))
    refs, generated = models_json_schema(
        [(model, "validation") for model in models], ref_template=_DEFS + "{model}"
    )
    defs: dict[str, Any] = generated["$defs"]
    if _TEMPLATED in defs:
        raise ValueError(f"a model is named {_TEMPLATED}, which the schema uses for templates")
    defs[_TEMPLATED] = _templated()
    with_refs = {name: refs[(catalog[name], "validation")]["$ref"] for name in names}
    for ref in sorted(set(with_refs.values())):  # a model several actions share: once
        _allow_templates(defs[ref.removeprefix(_DEFS)])
    _bind_actions(defs["Step"], catalog, with_refs)
    playbook = defs.pop("Playbook")
    return {
        "$schema": DIALECT,
        "$comment": f"Generated from kmsir's models: do not edit, run `{REGENERATE}`.",
        **playbook,
        "title": "kmsir playbook",
        "description": "An incident-response playbook for AWS KMS: steps run in order, each "
        "an action with its parameters (with:). Check one with `kmsir validate PLAYBOOK`.",
        "$defs": defs,
    }


def schema_text(catalog: ActionCatalog) -> str:
    """``playbook_schema`` as the committed file holds it: indented, keys sorted, one
    trailing newline, so that the same models always give the same bytes."""
    return json.dumps(playbook_schema(catalog), indent=2, sort_keys=True) + "\n"


def _templated() -> dict[str, Any]:
    here = {"$ref": _DEFS + _TEMPLATED}
    return {
        "description": "A value holding a template ({{ ... }} or {% ... %}): checked once "
        "rendered, at run time.",
        "anyOf": [
            {"type": "string", "pattern": r"\{\{|\{%"},
            {"type": "array", "contains": here},
            # some value of the mapping holds a template: not "every value holds none"
            {"type": "object", "not": {"additionalProperties": {"not": here}}},
        ],
    }


def _allow_templates(params: dict[str, Any]) -> None:
    """Let each parameter of a params model's schema hold a template instead of its value."""
    for name, prop in params.get("properties", {}).items():
        notes = {key: prop.pop(key) for key in _ANNOTATIONS if key in prop}
        params["properties"][name] = {**notes, "anyOf": [prop, {"$ref": _DEFS + _TEMPLATED}]}


def _bind_actions(step: dict[str, Any], catalog: ActionCatalog, with_refs: dict[str, str]) -> None:
    """Name the known actions in a step's ``action``, and give its ``with`` each one's
    parameters (required ones included)."""
    action = step["properties"]["action"]
    action["enum"] = sorted(catalog)
    conditions = []
    for name in sorted(catalog):
        then: dict[str, Any] = {"properties": {"with": {"$ref": with_refs[name]}}}
        if any(field.is_required() for field in catalog[name].model_fields.values()):
            then["required"] = ["with"]
        conditions.append(
            {
                "if": {"properties": {"action": {"const": name}}, "required": ["action"]},
                "then": then,
            }
        )
    step["allOf"] = conditions
