"""Where an interrupted run stands, rebuilt from its journal alone.

``load`` reads a bundle's journal and tells, for each step of the playbook that ran, whether
it is done (succeeded, skipped, or failed and passed over), was in flight when the run stopped
(started with no outcome: a mutating step there is re-checked against live state, never
blindly re-sent), or has a decision already made. The engine continues from the first step
that is not done; nothing that already ran is rendered or run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kmsir.errors import TamperedError, UsageError
from kmsir.evidence import bundle as evidence
from kmsir.evidence import integrity
from kmsir.evidence import journal as writer
from kmsir.evidence.entries import RunStarted
from kmsir.evidence.stepview import StepView
from kmsir.evidence.view import Finished, RunView


@dataclass
class RunState:
    """An interrupted or failed run, ready to continue."""

    root: Path
    view: RunView
    torn_tail: str | None

    @property
    def meta(self) -> RunStarted:
        """What the run-started entry recorded."""
        assert self.view.meta is not None
        return self.view.meta

    @property
    def steps(self) -> dict[str, StepView]:
        return self.view.steps

    @property
    def finished(self) -> Finished | None:
        """How the run ended, if it did (after its last resume)."""
        return self.view.finished

    @property
    def succeeded(self) -> bool:
        """True when the run finished and every step's work is done."""
        return self.view.status == "succeeded"


def load(root: Path) -> RunState:
    """Read the bundle at ``root`` and rebuild where its run stands.

    Refuses (``TamperedError``) a bundle that fails verification for any reason other than
    what an interrupted run leaves behind: resume never builds on altered evidence.
    """
    if not (root / evidence.JOURNAL).is_file():
        raise UsageError(f"{root}: not an evidence bundle (no {evidence.JOURNAL})")
    writer.ensure_idle(root)
    checked = integrity.check(root)
    problems = [p for p in checked.problems if p != checked.torn_tail]
    if problems:
        raise TamperedError(
            [f"not resumed (altered evidence is never built on): {p}" for p in problems]
        )
    if checked.view.meta is None:
        raise UsageError(
            f"{root}: the run stopped while writing its first journal line; there is nothing "
            "to resume (start it again with kmsir run)"
        )
    refuse_facilitators(root, checked.view.meta, "resume")
    return RunState(root, checked.view, checked.torn_tail)


def refuse_facilitators(root: Path, meta: RunStarted, doing: str) -> None:
    """Refuse, in one line, a tabletop facilitator's bundle: it holds the facilitator's
    actions, not an incident response, so there is nothing to ``doing`` (resume, roll back);
    the debrief reads it."""
    if meta.facilitates is None:
        return
    players = str(meta.facilitates.get("bundle") or "PLAYERS-BUNDLE")
    raise UsageError(
        f"{root} is a tabletop facilitator's bundle (its actions, not an incident response): "
        f"nothing to {doing}; kmsir tabletop debrief {players} --facilitator {root} reads it"
    )


def unfinished_runs(incident_dir: Path, playbook_id: str) -> list[Path]:
    """The bundles of ``incident_dir`` whose run of playbook ``playbook_id`` did not succeed
    (to be resumed, not restarted part-way with ``--start-at``)."""
    if not incident_dir.is_dir():
        return []
    found = []
    for root in sorted(incident_dir.iterdir()):
        journal = root / evidence.JOURNAL
        if not journal.is_file():
            continue
        view = evidence.read_journal(journal).view()
        if view.meta is None or view.meta.playbook.get("id") != playbook_id:
            continue
        if view.status != "succeeded":
            found.append(root)
    return found
