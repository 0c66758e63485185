"""Rolling a run back: what each of its changes needs to be undone, newest first.

``load`` reads the original bundle and refuses altered evidence (a rollback changes keys on
the strength of that journal). ``plan`` asks each step's action how to undo what the journal
says it did (``Action.undo``, from a ``Done``), and sorts the answers: the undos to run, what
cannot be undone (a revoked grant, a rotation), what is too late (a deletion past its date),
what a later step of the same run already undid, and what needs no undo. ``rollback_drift``
reads the live state each undo would change and compares it with what the run left: a change
someone made since is shown, and an undo that would wipe it asks again. ``rollback_run`` turns
the plan into the playbook the engine runs as a new run, linked to the original.

Nothing here prints or asks: ``cli.rollback`` shows the plan and asks once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from kmsir.actions import Registry
from kmsir.actions.base import IRREVERSIBLE, Done, Undo
from kmsir.errors import EvidenceError, UsageError
from kmsir.evidence import integrity
from kmsir.evidence import journal as writer
from kmsir.evidence.bundle import JOURNAL
from kmsir.evidence.stepview import StepView
from kmsir.evidence.view import RunView
from kmsir.playbook.values import parse_time

#: What a step of the original run comes to in the plan.
Kind = Literal["undo", "irreversible", "expired", "unknown", "undone", "unneeded"]
#: The kinds the rollback report lists as "could not be undone".
NOT_UNDONE: tuple[Kind, ...] = ("irreversible", "expired", "unknown")
#: The undo actions whose target ``rollback_drift`` reads live: the key's state, or its policy.
_STATE_UNDOS = (
    "kms.enable-key",
    "kms.disable-key",
    "kms.cancel-deletion",
    "kms.delete-imported-material",
)
_POLICY_UNDOS = ("kms.restore-policy",)


@dataclass(frozen=True)
class Item:
    """One changing step of the original run, as the rollback sees it."""

    step_id: str
    action: str
    kind: Kind
    #: One line for the plan and the report: what undoing does, or why it cannot.
    text: str
    undo: Undo | None = None
    #: The key id the undo acts on (``None``: not a key, or not known).
    key: str | None = None
    #: The state the step found, which the undo restores (``Outcome.before``).
    before: dict[str, Any] | None = None
    #: The run stopped inside the step: its change may not have been made.
    uncertain: bool = False
    #: What someone else changed since the run, as ``rollback_drift`` found it.
    drift: str | None = None
    #: The undo would wipe that change: it asks again before it runs.
    asks: bool = False

    @property
    def aspect(self) -> str | None:
        """What ``rollback_drift`` compares for this undo: the key's state or its policy."""
        action = self.undo.action if self.undo else None
        return "state" if action in _STATE_UNDOS else "policy" if action in _POLICY_UNDOS else None


@dataclass(frozen=True)
class Plan:
    """The original run and its changing steps, newest first."""

    root: Path
    view: RunView
    items: tuple[Item, ...]

    @property
    def undos(self) -> list[Item]:
        """The undos to run, newest first."""
        return [i for i in self.items if i.kind == "undo"]

    @property
    def not_undone(self) -> list[Item]:
        """What this rollback cannot undo, and why."""
        return [i for i in self.items if i.kind in NOT_UNDONE]

    @property
    def keys(self) -> list[str]:
        """The keys the undos act on, each once (the rollback reads them before and after)."""
        return list(dict.fromkeys(i.key for i in self.undos if i.key))


def load(root: Path) -> RunView:
    """The original run's view; ``EvidenceError`` when ``verify`` finds the bundle altered
    (a torn last line, which an interrupted run leaves, is no alteration)."""
    if not (root / JOURNAL).is_file():
        raise UsageError(f"{root}: not an evidence bundle (no {JOURNAL})")
    writer.ensure_idle(root)
    checked = integrity.check(root)
    problems = [p for p in checked.problems if p != checked.torn_tail]
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise EvidenceError(
            f"{root}: not rolled back, altered evidence is never acted on: {problems[0]}"
            f"{more} (kmsir verify {root} lists them)"
        )
    if checked.view.meta is None:
        raise UsageError(f"{root}: the run stopped before its first journal line: nothing ran")
    return checked.view


def plan(
    root: Path, view: RunView, actions: Registry, now: datetime, *, step: str | None = None
) -> Plan:
    """Every step of the run that changed something, newest first, with its undo or why
    there is none; ``step``: that step only (``UsageError`` when it changed nothing)."""
    done = [(s, _done(root, view, s)) for s in _changed_steps(view)]
    undos = {s.id: _undo(actions, s.action, d) for s, d in done}
    undone_by = _undone_within(done, undos)
    items = []
    for s, d in reversed(done):
        items.append(_item(s, d, undos[s.id], undone_by.get(s.id), actions, now))
    if step is not None:
        items = [i for i in items if i.step_id == step]
        if not items:
            changed = ", ".join(s.id for s, _ in done) or "none"
            raise UsageError(
                f"--step {step}: that step of run {view.run_id} changed nothing to roll back "
                f"(steps that did: {changed})"
            )
    return Plan(root.resolve(), view, tuple(items))


def _changed_steps(view: RunView) -> list[StepView]:
    """The changing steps that changed something, in the order they did: succeeded (not
    "already"), or stopped after sending a change AWS did not refuse (it may have landed)."""
    found = [
        s
        for s in view.steps.values()
        if s.mutating and ((s.done_ok and s.status == "succeeded") or s.carried.sent)
    ]
    last = max((s.outcome_seq or 0 for s in found), default=0) + 1
    # a step the run stopped inside has no outcome: it came last
    return sorted(found, key=lambda s: (s.outcome_seq or last) if s.done_ok else last)


def _done(root: Path, view: RunView, step: StepView) -> Done:
    finished = step.done_ok
    return Done(
        step_id=step.id,
        params=dict(step.params or {}),
        outputs=dict(step.outputs) if finished else {},
        before=step.before,
        after=step.after if finished else None,
        bundle=str(root.resolve()),
        artifacts=tuple(a.record.path for a in view.artifacts if a.record.step == step.id),
    )


def _undo(actions: Registry, name: str, done: Done) -> Undo | None:
    action = actions.get(name)
    return action.undo(done) if action is not None else None


def _target(done: Done) -> str:
    """What a step acted on, to pair it with the step that undid it: its key id, or its
    parameters."""
    for recorded in (done.outputs, done.after or {}, done.before or {}):
        if recorded.get("key_id"):
            return str(recorded["key_id"])
    return json.dumps(done.params, sort_keys=True, default=str)


def _paired(done: Done) -> str:
    """What a step acted on, to pair it with the step that undid it: a key store, or
    ``_target``."""
    store = done.outputs.get("store_id")
    return f"store {store}" if store else _target(done)


def _undone_within(
    done: list[tuple[StepView, Done]], undos: dict[str, Undo | None]
) -> dict[str, str]:
    """Steps a later step of the same run undid (disable, then enable the same key), both
    ways: ``{step id: the other step's id}``. Neither is undone by the rollback."""
    paired: dict[str, str] = {}
    for n, (step, d) in enumerate(done):
        undo = undos[step.id]
        if step.id in paired or undo is None:
            continue
        # an undo no rollback can run (re-importing deleted key material needs the material)
        # is still undone by a later step of the action's inverse
        inverse = undo.action if undo.action != IRREVERSIBLE else step.inverse
        for later, other in done[n + 1 :]:
            if (
                later.id not in paired
                and later.action == inverse
                and later.done_ok
                and _paired(other) == _paired(d)
            ):
                paired[step.id], paired[later.id] = later.id, step.id
                break
    return paired


def _item(
    step: StepView,
    done: Done,
    undo: Undo | None,
    undone_by: str | None,
    actions: Registry,
    now: datetime,
) -> Item:
    base = Item(
        step_id=step.id,
        action=step.action,
        kind="undo",
        text="",
        undo=undo,
        key=_key_id(undo, done, step.action),
        before=done.before,
        uncertain=not step.done_ok,
    )
    action = actions.get(step.action)
    until = step.inverse_until
    if undone_by is not None:
        return dataclasses.replace(
            base, kind="undone", text=f"undone within the run by step {undone_by}"
        )
    if action is None:
        return dataclasses.replace(
            base, kind="unknown", text=f"kmsir does not know action {step.action}: undo by hand"
        )
    if undo is None:
        if action.inverse is None:
            return dataclasses.replace(base, kind="unneeded", text="nothing to undo")
        if action.inverse == IRREVERSIBLE:
            return dataclasses.replace(
                base, kind="irreversible", text=f"cannot be undone: {step.summary}"
            )
        return dataclasses.replace(
            base,
            kind="unknown",
            text=f"its journal does not say enough to undo it: undo it by hand ({action.inverse})",
        )
    if undo.action == IRREVERSIBLE:
        return dataclasses.replace(base, kind="irreversible", text=undo.summary)
    if until and _passed(until, now):
        return dataclasses.replace(
            base,
            kind="expired",
            text=f"too late: {undo.action} was possible only until {until} ({undo.summary})",
        )
    text = undo.summary
    if base.uncertain:
        text += " (the run stopped inside this step: if its change was not made, the undo "
        text += "finds nothing to do)"
    return dataclasses.replace(base, text=text)


def _passed(until: str, now: datetime) -> bool:
    try:
        return parse_time(until, now) <= now
    except ValueError:
        return False  # not a date the journal could have written: let the undo try


def _key_id(undo: Undo | None, done: Done, action: str) -> str | None:
    """The key id an undo (or, without one, a ``kms.*`` step) acts on."""
    reference = (undo.params.get("key") if undo else None) or (
        _target(done) if action.startswith("kms.") else None
    )
    if not isinstance(reference, str) or reference.startswith("{"):
        return None
    return reference.rpartition("key/")[2] if reference.startswith("arn:") else reference


def described(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Items as the rollback run's journal keeps them (its ``run-started`` link)."""
    return [
        {
            "step": i.step_id,
            "action": i.action,
            "kind": i.kind,
            "text": i.text,
            **({"undo": i.undo.action} if i.undo and i.undo.action != IRREVERSIBLE else {}),
            **({"drift": i.drift, "asks": i.asks} if i.drift else {}),
        }
        for i in items
    ]
