"""The checklists a run ticked and the files it attached, as the report shows them.

Both come from the steps' recorded outputs (``checklist``, ``evidence.attach``); an
attachment's sha256 and size are the ones the journal recorded for its artifact (what
``verify`` checks), not only what the step said.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from kmsir.evidence.view import RunView
from kmsir.report.steps import ReportStep

__all__ = ["attachments", "checklists"]

_DONE = ("succeeded", "already")


def checklists(steps: Sequence[ReportStep]) -> list[dict[str, Any]]:
    """Each checklist step that ran: ``step``, ``name``, ``ticks`` (``item``, ``done``,
    ``by``, ``reason``; not ``items``, the mapping's method in templates), ``done``, ``total``.
    """
    shown = []
    for step in steps:
        if step.action != "checklist" or step.status not in _DONE:
            continue
        ticks = [
            {
                "item": str(i["item"]),
                "done": i.get("done") is True,
                "by": i.get("by"),
                "reason": i.get("reason"),
            }
            for i in step.outputs.get("items") or []
            if isinstance(i, dict) and "item" in i
        ]
        shown.append(
            {
                "step": step.id,
                "name": step.name,
                "ticks": ticks,
                "done": sum(1 for t in ticks if t["done"]),
                "total": len(ticks),
            }
        )
    return shown


def attachments(steps: Sequence[ReportStep], view: RunView) -> list[dict[str, Any]]:
    """Each file an ``evidence.attach`` step added: ``step``, ``path`` (in the bundle),
    ``file`` (the name it had outside), ``sha256``, ``bytes``, ``description``."""
    recorded = {a.record.path: a.record for a in view.artifacts}
    shown = []
    for step in steps:
        if step.action != "evidence.attach" or step.status not in _DONE:
            continue
        out = step.outputs
        path = str(out.get("artifact") or "")
        artifact = recorded.get(path)
        shown.append(
            {
                "step": step.id,
                "path": path,
                "file": PurePath(str(out.get("source") or "")).name,
                "sha256": artifact.sha256 if artifact else out.get("sha256"),
                "bytes": artifact.bytes if artifact else out.get("bytes"),
                "recorded": artifact is not None,
                "description": str(out.get("description") or ""),
            }
        )
    return shown
