"""What a playbook would do, read without running it and without any AWS call.

For each step: its action, phase and condition, the API calls it makes (with the inputs
filled in where a value depends only on them; anything decided at run time stays as its
template), the IAM permissions it needs, whether it changes anything and how to undo it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsir.actions import Registry
from kmsir.actions.base import IRREVERSIBLE, permitted_calls
from kmsir.errors import KmsirError
from kmsir.evidence.calls import Call
from kmsir.playbook import templating
from kmsir.playbook.model import Playbook


@dataclass(frozen=True)
class PlannedStep:
    """One step as ``kmsir plan`` shows it."""

    number: int
    id: str
    title: str
    phase: str | None
    action: str
    when: str | None
    #: Shown with ``evidence.calls.describe``; a value decided at run time stays a template.
    calls: tuple[Call, ...]
    #: The permissions of the path its parameters select (``Action.permissions_for``).
    permissions: tuple[str, ...]
    mutating: bool
    inverse: str | None  # None: nothing to undo; IRREVERSIBLE: cannot be undone
    #: Its ``with:`` values, filled in where they depend only on the inputs.
    values: dict[str, Any] = field(default_factory=dict)
    #: Its ``with:`` as written, filled in where it depends only on the inputs (``values``
    #: makes a list decided at run time a list of one template, for the checks).
    given: dict[str, Any] = field(default_factory=dict)
    #: Its ``for_each:`` (run once per item), if any.
    for_each: str | None = None


def plan(playbook: Playbook, actions: Registry, inputs: Mapping[str, Any]) -> list[PlannedStep]:
    """The steps of ``playbook`` with what each would call, given ``inputs`` (partial is fine)."""
    context = {"inputs": dict(inputs)}
    planned = []
    for number, step in enumerate(playbook.steps, start=1):
        action = actions[step.action]
        values = {key: _filled(value, context) for key, value in step.with_.items()}
        given = dict(values)
        for name, value in values.items():  # a list decided at run time: one templated item
            field = action.params.model_fields.get(name)
            if isinstance(value, str) and field is not None and "list" in str(field.annotation):
                values[name] = [value]
        # no validation: a value decided at run time ({{ steps.x.y }}) stays as its template
        params = action.params.model_construct(**values)
        try:
            calls = tuple(action.api_calls(params))
        except (KmsirError, AttributeError, TypeError, ValueError):
            needed = [p for p in action.permissions if not p.startswith("sts:")]
            calls = tuple(permitted_calls(needed))
        try:
            permissions = tuple(action.permissions_for(params))
        except (KmsirError, AttributeError, TypeError, ValueError):
            permissions = tuple(action.permissions)  # unreadable params: every path
        planned.append(
            PlannedStep(
                number=number,
                id=step.id,
                title=step.title,
                phase=step.phase,
                action=step.action,
                when=step.when,
                calls=calls,
                permissions=permissions,
                mutating=action.mutating,
                inverse=action.inverse if action.mutating else None,
                values=values,
                given=given,
                for_each=step.for_each,
            )
        )
    return planned


def permissions(planned: list[PlannedStep]) -> list[str]:
    """Every IAM permission the playbook may need, sorted."""
    return sorted({p for step in planned for p in step.permissions})


def describe_inverse(step: PlannedStep) -> str:
    """How a step is undone, in words."""
    if not step.mutating:
        return "read-only"
    if step.inverse == IRREVERSIBLE:
        return "IRREVERSIBLE"
    return f"undo: {step.inverse}" if step.inverse else "undo: none needed"


def _filled(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with templates rendered when they only need the inputs; else as written."""
    if isinstance(value, str) and "{{" in value and "steps." not in value and "run." not in value:
        try:
            return templating.render_value(value, context)
        except KmsirError:
            return value
    if isinstance(value, list):
        return [_filled(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, context) for k, v in value.items()}
    return value
