"""The playbook JSON Schema (``kmsir schema``, ``schema/playbook.schema.json``): generated from
the models, committed in sync with them, accepting every shipped playbook and rejecting broken
ones, as the loader does.

The schema is what an editor checks a playbook against while it is written (the
``# yaml-language-server: $schema=...`` first line); ``kmsir validate`` stays the judge. Two
promises tie them: a playbook the loader accepts as written (without converting a value to
the field's type, as pydantic's lax mode does with ``retries: "3"``) is never flagged by the
schema (an editor must not cry wolf), and a playbook whose shape the loader refuses (unknown
or missing fields, wrong types, unknown actions or parameters) is flagged by the schema too.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kmsir import actions
from kmsir.errors import PlaybookError
from kmsir.playbook import model, yamlsafe
from kmsir.playbook import schema as playbook_schema

from .clikit import cli
from .conftest import PLAYBOOKS, REPO
from .fuzzkit import mutated_bytes, mutated_fields

COMMITTED = REPO / playbook_schema.COMMITTED
CATALOG = actions.catalog()
SHIPPED = sorted(PLAYBOOKS.glob("*.yaml"))
#: The first line of every shipped playbook: editors find the schema through it.
SCHEMA_COMMENT = re.compile(r"^# yaml-language-server: \$schema=(?P<ref>\S+)$")


#: Examples for the fuzz test; ``KMSIR_FUZZ_EXAMPLES`` as in tests/test_fuzz_playbooks.py.
EXAMPLES = max(20, int(os.environ.get("KMSIR_FUZZ_EXAMPLES", "150")) // 3)


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` as an ECMA-262 regex, as JSON Schema and editors read it: ``$`` ends the
    text (Python's ``re``, which ``jsonschema`` uses, also lets it match before a final
    newline, and would let the id ``"snapshot\\n"`` through)."""
    if not validator.is_type(instance, "string"):
        return
    ends = pattern.endswith("$") and not pattern.endswith("\\$")
    if not re.search(pattern[:-1] + r"\Z" if ends else pattern, instance):
        yield jsonschema.ValidationError(f"{instance[:80]!r} does not match {pattern!r}")


Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
)


@pytest.fixture(scope="module")
def validator() -> Any:
    """The committed schema, ready to validate documents."""
    return Validator(json.loads(COMMITTED.read_text()))


def _errors(validator: Any, data: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}"
        for e in validator.iter_errors(data)
    ]


# --- the committed file ---------------------------------------------------------------------


def test_committed_schema_is_what_the_models_give() -> None:
    """A model or an action changed without regenerating the schema fails here, saying how to
    regenerate it."""
    generated = playbook_schema.schema_text(CATALOG)
    committed = COMMITTED.read_text() if COMMITTED.exists() else ""
    if committed != generated:
        diff = difflib.unified_diff(
            committed.splitlines(), generated.splitlines(), "committed", "generated", lineterm=""
        )
        shown = "\n".join(list(diff)[:40])
        pytest.fail(
            f"{playbook_schema.COMMITTED} is not what the models give: regenerate it with "
            f"`{playbook_schema.REGENERATE}`\n{shown}"
        )


def test_schema_text_is_canonical_and_deterministic() -> None:
    text = playbook_schema.schema_text(CATALOG)
    assert text == playbook_schema.schema_text(actions.catalog())
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert text.endswith("}\n")


def test_schema_is_valid_json_schema() -> None:
    schema = json.loads(COMMITTED.read_text())
    assert schema["$schema"] == jsonschema.Draft202012Validator.META_SCHEMA["$id"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_names_every_action_and_binds_its_parameters() -> None:
    schema = playbook_schema.playbook_schema(CATALOG)
    step = schema["$defs"]["Step"]
    assert step["properties"]["action"]["enum"] == sorted(CATALOG)
    bound = [c["if"]["properties"]["action"]["const"] for c in step["allOf"]]
    assert bound == sorted(CATALOG)


def test_each_parameter_may_hold_a_template_instead_of_its_value() -> None:
    """Once: a model several actions share (``KeyParams``) is not widened once per action."""
    schema = playbook_schema.playbook_schema(CATALOG)
    templated = {"$ref": "#/$defs/TemplatedValue"}
    for condition in schema["$defs"]["Step"]["allOf"]:
        ref = condition["then"]["properties"]["with"]["$ref"]
        params = schema["$defs"][ref.rsplit("/", 1)[1]]
        for name, prop in params["properties"].items():
            assert prop["anyOf"][1:] == [templated], name
            assert json.dumps(prop).count("TemplatedValue") == 1, (name, prop)


def test_schema_is_built_from_the_catalog_it_is_given() -> None:
    """The playbook layer does not know the registry: the actions are whatever it is given."""
    only_note = {"note": CATALOG["note"]}
    validator = jsonschema.Draft202012Validator(playbook_schema.playbook_schema(only_note))
    note = {
        "id": "t",
        "title": "T",
        "steps": [{"id": "a", "action": "note", "with": {"text": "x"}}],
    }
    assert validator.is_valid(note)
    note["steps"][0]["action"] = "kms.snapshot"
    assert not validator.is_valid(note)


def test_a_model_named_like_the_template_definition_is_refused() -> None:
    class TemplatedValue(BaseModel):
        text: str

    with pytest.raises(ValueError, match="TemplatedValue"):
        playbook_schema.playbook_schema({"note": TemplatedValue})


# --- the command ----------------------------------------------------------------------------


def test_schema_command_prints_the_committed_schema() -> None:
    ran = cli("schema")
    assert ran.exit_code == 0, ran.output
    assert ran.stdout == playbook_schema.schema_text(CATALOG)
    assert ran.stderr == ""


def test_schema_command_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "playbook.schema.json"
    ran = cli("schema", "--out", out)
    assert ran.exit_code == 0, ran.output
    assert ran.stdout == ""
    assert out.read_bytes() == playbook_schema.schema_text(CATALOG).encode()


def test_schema_command_says_when_it_cannot_write(tmp_path: Path) -> None:
    ran = cli("schema", "--out", tmp_path)  # a directory
    assert ran.exit_code == 2
    assert ran.stderr.count("\n") == 1
    assert "cannot write" in ran.stderr


# --- shipped playbooks ----------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_playbook_matches_the_schema(path: Path, validator: Any) -> None:
    data = yamlsafe.load_file(path).data
    assert _errors(validator, data) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_playbook_points_at_the_committed_schema(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    found = SCHEMA_COMMENT.match(first)
    assert found, f"{path.name}: first line is {first!r}, not the $schema comment"
    target = (path.parent / found["ref"]).resolve()
    assert target == COMMITTED.resolve()
    assert target.is_file()


def test_every_shipped_playbook_is_checked() -> None:
    assert len(SHIPPED) >= 5


# --- broken and valid playbooks ------------------------------------------------------------


def _small() -> dict[str, Any]:
    """A small valid playbook: templated and literal parameters, every step field used."""
    return {
        "id": "small",
        "title": "A small playbook",
        "version": 1,
        "severity": "high",
        "inputs": {
            "key": {"type": "kms-key", "required": True},
            "days": {"type": "int"},
            "accounts": {"type": "list", "default": "111122223333"},
        },
        "steps": [
            {
                "id": "snapshot",
                "name": "Read the key",
                "phase": "identification",
                "action": "kms.snapshot",
                "with": {"key": "{{ inputs.key }}"},
            },
            {
                "id": "delete",
                "phase": "containment",
                "action": "kms.schedule-deletion",
                "when": "'snapshot' in steps",
                "with": {"key": "{{ steps.snapshot.key_id }}", "pending_window_days": 7},
                "on_error": "ask",
                "retries": 2,
            },
            {
                "id": "collect",
                "action": "cloudtrail.collect",
                "with": {"key": "alias/app", "aliases": ["alias/app"], "source": "lookup"},
            },
            {"id": "tell", "phase": "recovery", "action": "note", "with": {"text": "Done."}},
        ],
    }


Mutation = Callable[[dict[str, Any]], None]


def _step(index: int, **changes: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["steps"][index].update(changes)

    return mutate


def _param(index: int, **changes: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["steps"][index]["with"].update(changes)

    return mutate


def _drop(*path: str | int) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _top(**changes: Any) -> Mutation:
    return lambda data: data.update(changes)


def _revoke(grant_filter: dict[str, Any]) -> Mutation:
    """Add a step revoking the grants ``grant_filter`` (a nested model) selects."""

    def mutate(data: dict[str, Any]) -> None:
        params = {"key": "{{ inputs.key }}", "filter": grant_filter}
        data["steps"].append({"id": "revoke", "action": "kms.revoke-grants", "with": params})

    return mutate


#: name -> (how the small playbook is broken, where the schema must say so).
BROKEN: dict[str, tuple[Mutation, tuple[str | int, ...]]] = {
    "unknown-top-field": (_top(owner="me"), ()),
    "unknown-step-field": (_step(0, timeout=30), ("steps", 0)),
    "missing-title": (_drop("title"), ()),
    "missing-steps": (_drop("steps"), ()),
    "no-steps": (_top(steps=[]), ("steps",)),
    "title-not-text": (_top(title=["A", "B"]), ("title",)),
    "playbook-id-not-kebab": (_top(id="Small Playbook"), ("id",)),
    "bad-step-id": (_step(0, id="Snap shot"), ("steps", 0, "id")),
    "step-id-ending-in-a-newline": (_step(0, id="snapshot\n"), ("steps", 0, "id")),
    "step-id-too-long": (_step(0, id="s" * 49), ("steps", 0, "id")),
    "missing-step-id": (_drop("steps", 0, "id"), ("steps", 0)),
    "missing-action": (_drop("steps", 3, "action"), ("steps", 3)),
    "unknown-action": (_step(3, action="kms.shred"), ("steps", 3, "action")),
    "on-error-not-text": (_step(1, on_error=True), ("steps", 1, "on_error")),
    "on-error-unknown": (_step(1, on_error="retry"), ("steps", 1, "on_error")),
    "retries-too-many": (_step(1, retries=11), ("steps", 1, "retries")),
    "retries-negative": (_step(1, retries=-1), ("steps", 1, "retries")),
    "unknown-phase": (_step(0, phase="triage"), ("steps", 0, "phase")),
    "unknown-severity": (_top(severity="urgent"), ("severity",)),
    "when-not-text": (_step(1, when=["a"]), ("steps", 1, "when")),
    "with-not-mapping": (_step(3, **{"with": "Done."}), ("steps", 3, "with")),
    "unknown-parameter": (_param(0, keyy="alias/app"), ("steps", 0, "with")),
    "unknown-parameter-of-another-action": (_param(3, key="alias/app"), ("steps", 3, "with")),
    "missing-parameter": (_drop("steps", 3, "with", "text"), ("steps", 3, "with")),
    "missing-with": (_drop("steps", 3, "with"), ("steps", 3)),
    "parameter-out-of-range": (
        _param(1, pending_window_days=3),
        ("steps", 1, "with", "pending_window_days"),
    ),
    "parameter-wrong-type": (
        _param(1, pending_window_days="a week"),
        ("steps", 1, "with", "pending_window_days"),
    ),
    "parameter-not-a-choice": (_param(2, source="ftp"), ("steps", 2, "with", "source")),
    "parameter-list-given-text": (_param(2, aliases="alias/app"), ("steps", 2, "with", "aliases")),
    "parameter-empty-text": (_param(3, text=""), ("steps", 3, "with", "text")),
    "nested-parameter-wrong-type": (
        _revoke({"allowed_accounts": "111122223333"}),
        ("steps", 4, "with", "filter"),
    ),
    "input-unknown-type": (
        lambda data: data["inputs"]["key"].update(type="float"),
        ("inputs", "key", "type"),
    ),
    "input-unknown-field": (
        lambda data: data["inputs"]["key"].update(secret=True),
        ("inputs", "key"),
    ),
}

#: name -> a change the loader accepts, so the schema must too.
VALID: dict[str, Mutation] = {
    "as-is": lambda data: None,
    "templated-int-parameter": _param(1, pending_window_days="{{ inputs.days }}"),
    "templated-list-parameter": _param(2, aliases="{{ steps.snapshot.aliases }}"),
    "statement-template": _param(2, source="{% if inputs.days %}lookup{% else %}s3{% endif %}"),
    "template-inside-a-list": _param(2, aliases=["alias/app", "{{ inputs.key }}"]),
    "template-inside-a-mapping": _revoke({"allowed_accounts": "{{ inputs.accounts }}"}),
    "nested-parameter": _revoke({"allowed_accounts": ["111122223333"]}),
    "defaults-left-out": _drop("steps", 1, "with", "pending_window_days"),
    "optional-fields-left-out": lambda data: [data.pop(k) for k in ("version", "severity")],
    "version-as-text": _top(version="1.2"),
}


def _document(data: dict[str, Any]) -> yamlsafe.Document:
    return yamlsafe.load_bytes(yaml.safe_dump(data, sort_keys=False).encode(), "p.yaml")


def _loader_accepts(document: yamlsafe.Document) -> bool:
    try:
        model.from_document(document, CATALOG, path=Path("p.yaml"))
    except PlaybookError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_playbook_is_rejected_where_it_is_broken(name: str, validator: Any) -> None:
    mutate, where = BROKEN[name]
    data = _small()
    mutate(data)
    document = _document(data)
    assert not _loader_accepts(document), "the case must be broken for kmsir too"
    errors = list(validator.iter_errors(document.data))
    assert errors, f"the schema accepts a playbook kmsir refuses ({name})"
    paths = [tuple(e.absolute_path) for e in errors]
    assert any(path[: len(where)] == where for path in paths), paths


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_playbook_is_accepted(name: str, validator: Any) -> None:
    data = _small()
    VALID[name](data)
    document = _document(data)
    assert _loader_accepts(document)
    assert _errors(validator, document.data) == []


def test_unknown_field_of_a_nested_parameter_is_flagged(validator: Any) -> None:
    """``filter: {allowed_acounts: [...]}`` (a typo) would fail the step at run time."""
    data = _small()
    _revoke({"allowed_acounts": ["111122223333"]})(data)
    paths = [tuple(e.absolute_path) for e in validator.iter_errors(data)]
    assert ("steps", 4, "with", "filter") in paths
    assert not _loader_accepts(_document(data))  # validate says so too, naming the field


# --- the fuzz corpus: the schema agrees with the loader on shape -----------------------------


def _shape_refused(data: Any) -> bool:
    """What the loader refuses for its shape alone: the playbook model's fields and types,
    unknown actions, unknown or missing parameters (not template syntax, step references or
    the actions' own value checks, which the schema cannot express)."""
    try:
        playbook = model.Playbook.model_validate(data)
    except ValidationError:
        return True
    for step in playbook.steps:
        params = CATALOG.get(step.action)
        if params is None:
            return True
        fields = {info.alias or name: info for name, info in params.model_fields.items()}
        if set(step.with_) - set(fields):
            return True
        if any(info.is_required() and name not in step.with_ for name, info in fields.items()):
            return True
    return False


def _shape_accepted(data: Any) -> bool:
    """What the loader accepts for its shape and its literal parameters' values, as they are
    written: stricter than the loader, which converts some values (``version: true`` to 1,
    ``retries: "3"`` to 3) that the schema, like pydantic's strict mode, flags; and any error
    in a parameter without a template counts."""
    if _shape_refused(data):
        return False
    try:
        playbook = model.Playbook.model_validate_json(_json(data), strict=True)
    except (TypeError, ValueError):  # not JSON (a YAML timestamp), or converted
        return False
    for step in playbook.steps:
        literal = {
            key: value
            for key, value in step.with_.items()
            if not any("{{" in t or "{%" in t for t in _strings(value))
        }
        try:
            CATALOG[step.action].model_validate_json(_json(literal), strict=True)
        except ValidationError as exc:
            templated = set(step.with_) - set(literal)
            kinds = {e["type"] for e in exc.errors() if not templated or e["loc"]}
            if kinds - {"missing"}:
                return False
    return True


def _json(data: Any) -> str:
    return json.dumps(data, allow_nan=False)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@settings(
    derandomize=True,
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=st.one_of(mutated_fields(), mutated_bytes()))
def test_schema_agrees_with_the_loader_on_mutated_playbooks(raw: bytes, validator: Any) -> None:
    try:
        data = yamlsafe.load_bytes(raw, "p.yaml").data
    except PlaybookError:
        return  # not YAML kmsir reads: an editor says so before any schema
    flagged = _errors(validator, data)
    if _shape_refused(data):
        assert flagged, "the schema accepts a playbook whose shape kmsir refuses"
    elif _shape_accepted(data):
        assert flagged == [], "the schema flags a playbook kmsir accepts"
