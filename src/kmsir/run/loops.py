"""``for_each:``: one step run once per item of a list, each run a step of its own.

Each iteration is the step again with the item in the context as ``item`` and its own id,
``<step>[<n>]`` (1-based: ``contain[2]``), which no playbook step can have: it is journaled,
previewed and confirmed on its own (one decision per actor, per key), resumed on its own, and
undone on its own by ``rollback``. Once every iteration has run, later steps read
``steps.<step>.items`` (each iteration's outputs, with its status) and ``steps.<step>.count``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kmsir.errors import ActionError, KmsirError
from kmsir.evidence.journal import ITERATION
from kmsir.evidence.stepview import StepView
from kmsir.playbook import templating
from kmsir.playbook.model import Step
from kmsir.playbook.references import reads_variable

#: Most items one ``for_each`` may run over: each is a decision a person confirms.
MAX_ITEMS = 100


def items(step: Step, context: dict[str, Any]) -> list[Any]:
    """The list ``step.for_each`` renders to; ``ActionError`` when it cannot be rendered, is
    not a list, or is longer than ``MAX_ITEMS``."""
    assert step.for_each is not None
    try:
        found = templating.render_value(step.for_each, context)
    except KmsirError as exc:
        raise ActionError(f"for_each: {exc}") from None
    if isinstance(found, tuple):
        found = list(found)
    if not isinstance(found, list):
        kind = "text" if isinstance(found, str) else type(found).__name__
        raise ActionError(f"for_each: gave {kind}, not a list (write it as one {{{{ ... }}}})")
    if len(found) > MAX_ITEMS:
        raise ActionError(
            f"for_each: {len(found)} items, at most {MAX_ITEMS} (each is its own decision): "
            "narrow the list"
        )
    return grouped(found)


def grouped(found: list[Any]) -> list[Any]:
    """Keys from several accounts (key ARNs, or outputs naming an ``arn``) grouped by account
    and Region, in their order otherwise: a run over an organisation confirms them one
    account and Region at a time. Items from one account keep their order."""
    where = [_account_region(item) for item in found]
    if len({w[0] for w in where if w is not None}) < 2:
        return found
    rank: dict[tuple[str, str] | None, int] = {}
    for w in where:
        rank.setdefault(w, len(rank))  # first seen first; items naming no key stay together
    ordered = sorted(range(len(found)), key=lambda n: (rank[where[n]], n))
    return [found[n] for n in ordered]


def _account_region(item: Any) -> tuple[str, str] | None:
    arn = item.get("arn") if isinstance(item, Mapping) else item
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return None
    parts = arn.split(":")
    return (parts[4], parts[3]) if len(parts) > 5 and parts[2] == "kms" else None


def per_item(step: Step) -> bool:
    """Whether the step's ``when:`` reads ``item``: then each iteration is run or skipped by
    it; otherwise it is evaluated once, before the list (which may read what it guards)."""
    return step.when is not None and reads_variable(step.when, "item", expression=True)


def iteration(step: Step, number: int, total: int, item: Any) -> Step:
    """The step as its ``number``-th run (of ``total``) over ``item``."""
    return step.model_copy(
        update={
            "id": iteration_id(step.id, number),
            "name": f"{step.title} ({number}/{total}: {_shown(item)})",
            "for_each": None,
            "when": step.when if per_item(step) else None,
        }
    )


def iteration_id(step_id: str, number: int) -> str:
    """The id the ``number``-th iteration of ``step_id`` is journaled under."""
    return f"{step_id}[{number}]"


def looped_step(step_id: str) -> str | None:
    """The step an iteration id belongs to (``contain[2]`` -> ``contain``), else ``None``."""
    match = ITERATION.fullmatch(step_id)
    return match.group(1) if match else None


def outputs(step: Step, total: int, done: dict[str, Any]) -> dict[str, Any] | None:
    """What later steps read of a loop: each iteration's outputs (those that succeeded;
    ``None`` for one skipped or failed), and how many items there were. ``None`` when no
    iteration succeeded: then the loop did not run, as a skipped step did not
    (``'X' in steps`` is false)."""
    runs = [done.get(iteration_id(step.id, n)) for n in range(1, total + 1)]
    statuses = {run.get("status") for run in runs if run is not None}
    if not statuses:
        return None
    status = "already" if statuses == {"already"} else "succeeded"
    return {"items": runs, "count": total, "status": status}


def resume_point(step: Step, prior: Mapping[str, StepView]) -> str | None:
    """Where a resumed run goes on in a ``for_each`` step: its first iteration the journal
    shows unfinished, else (iterations, all done) ``None``, else (none yet) the step."""
    started = [view for name, view in prior.items() if looped_step(name) == step.id]
    if not started:
        return step.id
    unfinished = [view.id for view in started if not view.done(step.on_error)]
    return unfinished[0] if unfinished else None


def _shown(item: Any) -> str:
    text = item if isinstance(item, str) else json.dumps(item, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
