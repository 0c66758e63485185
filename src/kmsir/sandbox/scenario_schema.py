"""The scenario JSON Schema, generated from the model: editors check and complete scenario
files with it (the ``# yaml-language-server: $schema=...`` first line of every shipped
scenario), and ``kmsir validate`` checks a scenario file against the same model.

It is pydantic's schema of ``Scenario`` as it validates a file. What the schema cannot say is
left to loading (``scenario.load``, which ``kmsir validate`` runs): references between
sections (a grant's key, an event's identity, the ground truth's names), the playbook's steps
and choices the injects and expected decisions name, templates that must render, files beside
the scenario. A scenario written before ``briefing`` (with ``story:``) still loads, but the
schema describes the current format only.
"""

from __future__ import annotations

import json
from typing import Any

from kmsir.sandbox.scenario_model import Scenario

#: The JSON Schema dialect pydantic writes.
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where the schema is committed, relative to the project root; how to regenerate it.
COMMITTED = "schema/scenario.schema.json"
REGENERATE = f"kmsir schema --scenario --out {COMMITTED}"


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file."""
    generated = Scenario.model_json_schema(mode="validation")
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": DIALECT,
        "$comment": f"Generated from kmsir's models: do not edit, run `{REGENERATE}`.",
        **generated,
        "title": "kmsir sandbox scenario",
        "description": "A sandbox scenario for AWS KMS: the seeded world (keys, grants, users, "
        "a CloudTrail history), the playbook it exercises, its injects, what the players are "
        "told (briefing) and what only the facilitator knows (ground_truth, expected, "
        "evidence_to_see, prevented_by, targets). Check one with `kmsir validate SCENARIO`.",
    }


def schema_text() -> str:
    """``scenario_schema`` as the committed file holds it: indented, keys sorted, one
    trailing newline, so that the same model always gives the same bytes."""
    return json.dumps(scenario_schema(), indent=2, sort_keys=True) + "\n"
