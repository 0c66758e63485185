"""Lint: what makes a playbook weaker without making it wrong. Warnings never stop a run;
``validate`` shows them (exit 0) and ``validate --strict`` counts them as problems (exit 2).

- a field the report and reviewers read left out (``version``, ``severity``, ``description``,
  a step's ``phase``);
- a step that can never run: its ``when:`` needs a question's answer to be a value that is not
  one of the question's choices (or is ``false``); an answer compared anywhere with a value
  that is not a choice is a typo too;
- a read of a step that may not have run (it has a ``when:`` or a ``for_each:``, or
  ``on_error: continue`` or ``ask`` lets the run go on without it) with no ``'X' in steps``
  around it: the run would stop there with a template error;
- a step that changes AWS state with no ``kms.snapshot`` before it: the evidence would not
  show the state before the change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kmsir.playbook import references, yamlsafe

if TYPE_CHECKING:
    from kmsir.playbook.model import Step

#: The action whose step preserves a key's state before a change.
SNAPSHOT_ACTION = "kms.snapshot"
#: The output a question's step gives: the choice taken.
ANSWER = "answer"


@dataclass(frozen=True)
class Facts:
    """What lint knows of the actions: which change AWS state (``None``: not known)."""

    mutating: frozenset[str] | None = None


def warnings(
    data: Mapping[str, Any],
    steps: Sequence[tuple[int, Step]],
    document: yamlsafe.Document,
    facts: Facts,
) -> Iterator[str]:
    """Every warning for the playbook ``data`` whose checkable ``steps`` (index in the file,
    step) are given, in file order."""
    for field in ("version", "severity", "description"):
        if data.get(field) is None:
            yield f"{document.where(())}: warning: no '{field}' (helps the report and reviewers)"
    by_id = {step.id: step for _, step in steps}
    earlier: dict[str, Step] = {}
    snapshot_before = False
    for index, step in steps:
        at = ("steps", index)
        where = document.where(at)
        prefix = f"{where}: warning: step '{step.id}'"
        if step.phase is None:
            yield f"{prefix} has no phase (the report groups steps by NIST phase)"
        yield from _unreachable(step, earlier, document, at)
        yield from _unguarded(step, earlier, by_id, document, at)
        changes_key = step.action.startswith("kms.")  # a snapshot keeps a key's state
        mutating = facts.mutating is not None and step.action in facts.mutating
        if mutating and changes_key and not snapshot_before:
            yield (
                f"{prefix} changes AWS state ({step.action}) with no {SNAPSHOT_ACTION} step "
                "before it: the evidence would not hold the state before the change"
            )
        snapshot_before = snapshot_before or step.action == SNAPSHOT_ACTION
        earlier[step.id] = step


def _texts(step: Step) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """``(path in the step, text, is the when:)`` of each template of ``step``."""
    if step.when is not None:
        yield ("when",), step.when, True
    if step.for_each is not None:
        yield ("for_each",), step.for_each, False
    queue: deque[tuple[tuple[str | int, ...], Any]] = deque([(("with",), step.with_)])
    while queue:
        path, value = queue.popleft()
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                yield path, value, False
        elif isinstance(value, dict):
            queue.extend(((*path, key), item) for key, item in value.items())
        elif isinstance(value, list):
            queue.extend(((*path, n), item) for n, item in enumerate(value))


def _choices(step: Step) -> tuple[str, ...] | None:
    """The literal choices of a question's step, if it asks one."""
    found = step.with_.get("choices")
    if not isinstance(found, list) or not found or not all(isinstance(c, str) for c in found):
        return None
    return None if any("{{" in c or "{%" in c for c in found) else tuple(found)


def _unreachable(
    step: Step, earlier: Mapping[str, Step], document: yamlsafe.Document, at: tuple[str | int, ...]
) -> Iterator[str]:
    for path, text, is_when in _texts(step):
        tree = references.parse(text, expression=is_when)
        if tree is None:
            continue
        where = document.where((*at, *path))
        prefix = f"{where}: warning: step '{step.id}'"
        if is_when and references.never_true(tree):
            yield f"{prefix} can never run: its when: is always false"
            continue
        for found in references.comparisons(tree, when=is_when):
            asked = earlier.get(found.step)
            choices = _choices(asked) if asked is not None and found.field == ANSWER else None
            if choices is None:
                continue
            strays = [v for v in found.values if v not in choices]
            if not strays:
                continue
            offered = _listed(choices)
            shown = ", ".join(yamlsafe.shorten(v, 40) for v in strays)
            never = found.op in ("eq", "in") and len(strays) == len(found.values)
            if found.required and never:
                yield (
                    f"{prefix} can never run: steps.{found.step}.answer is never {shown} "
                    f"(its choices: {offered})"
                )
            else:
                yield (
                    f"{prefix}: steps.{found.step}.answer compared with {shown}, which is not "
                    f"one of its choices ({offered})"
                )


def _listed(choices: Sequence[str], most: int = 8) -> str:
    """The choices as a person reads them: plain when short and printable, quoted and cut
    otherwise, the first ``most`` of them."""
    shown = [c if c.isprintable() and len(c) <= 30 else yamlsafe.shorten(c, 30) for c in choices]
    more = f", ... ({len(shown) - most} more)" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more


def may_not_run(step: Step) -> str | None:
    """Why ``step`` may not have run when a later step reads it (``None``: it ran, or the run
    stopped)."""
    if step.when is not None:
        return "it has a when:"
    if step.for_each is not None:
        return "its for_each may give no items"
    if step.on_error in ("continue", "ask"):
        return f"on_error: {step.on_error} lets the run go on without it"
    return None


def _unguarded(
    step: Step,
    earlier: Mapping[str, Step],
    by_id: Mapping[str, Step],
    document: yamlsafe.Document,
    at: tuple[str | int, ...],
) -> Iterator[str]:
    def implied(present: references.Present) -> references.Present:
        """A step ran only if its own ``when:`` held: what that needs ran too."""
        grown = set(present)
        todo = list(present)
        while todo:
            other = by_id.get(todo.pop())
            tree = references.parse(other.when, expression=True) if other and other.when else None
            for more in references.present_if(tree, True) if tree is not None else ():
                if more not in grown:
                    grown.add(more)
                    todo.append(more)
        return frozenset(grown)

    guard: references.Present = frozenset()
    if step.when is not None:
        tree = references.parse(step.when, expression=True)
        guard = references.present_if(tree, True) if tree is not None else frozenset()
    for path, text, is_when in _texts(step):
        tree = references.parse(text, expression=is_when)
        if tree is None:
            continue
        warned: set[str] = set()
        start = frozenset() if is_when else guard
        for ref in references.references(tree, start, implied):
            read = earlier.get(ref.step)
            why = may_not_run(read) if read is not None and not ref.guarded else None
            if why is None or ref.step in warned:
                continue
            warned.add(ref.step)
            yield (
                f"{document.where((*at, *path))}: warning: step '{step.id}' reads "
                f"steps.{ref.step}, which may not have run ({why}): guard the read with "
                f"'{ref.step}' in steps"
            )
