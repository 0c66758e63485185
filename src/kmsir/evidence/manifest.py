"""The manifest a journal implies, and a bundle opened for reading.

``manifest.json`` is derived: run metadata, the chain of custody, each artifact, the outcome
and the journal's head, all read from the journal (``build_manifest`` of its ``RunView``).
It is written when the run finishes and whenever the journal grows after that (a report's
record); ``verify`` recomputes it and compares. ``Bundle`` is what the report and export read:
the RunView, the manifest, and the artifacts it lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from kmsir.errors import EvidenceError, UsageError
from kmsir.evidence.bundle import FORMAT, JOURNAL, MANIFEST, read_journal, replace_derived
from kmsir.evidence.view import RunView


def build_manifest(view: RunView) -> dict[str, Any]:
    """The manifest a journal implies (``view`` is its fold): run metadata, custody,
    artifacts, outcome, chain head."""
    meta = view.meta
    if meta is None:
        raise EvidenceError(f"{JOURNAL}: no run-started entry")
    finished = view.finished
    return {
        "format": FORMAT,
        "tool": meta.tool,
        "versions": meta.versions,
        "playbook": meta.playbook,
        "incident": meta.incident,
        "run_id": meta.run_id,
        "inputs": view.inputs,
        "operator": meta.operator,
        "host": meta.host,
        "mode": meta.mode,
        "simulated": meta.simulated,
        "scenario": meta.scenario,
        "region": meta.region,
        **({"input_changes": view.input_changes} if view.input_changes else {}),
        "started": view.started,
        "finished": finished.ts if finished else None,
        "status": view.status,
        # who handled the evidence, when and where (NIST SP 800-61's evidence log)
        "custody": [msgspec.to_builtins(c) for c in view.custody],
        "artifacts": [msgspec.to_builtins(a.record) for a in view.artifacts],
        "journal": {"entries": view.lines, "head": view.head},
    }


@dataclass
class Bundle:
    """A bundle opened for reading (report, verify)."""

    root: Path
    view: RunView
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: Path) -> Bundle:
        """Open a bundle directory; the manifest is recomputed when it was never written."""
        if not (root / JOURNAL).is_file():
            raise UsageError(f"{root}: not an evidence bundle (no {JOURNAL})")
        view = read_journal(root / JOURNAL).view()
        try:
            manifest = json.loads((root / MANIFEST).read_bytes())
        except (OSError, ValueError):
            manifest = build_manifest(view)
        return cls(root, view, manifest)

    def artifact_path(self, relative: str) -> Path:
        """Where an artifact recorded in this bundle is (to stream a large one)."""
        known = {a["path"] for a in self.manifest.get("artifacts", [])}
        if relative not in known:
            raise EvidenceError(f"{relative} is not an artifact of {self.root}")
        return self.root / relative

    def artifact_bytes(self, relative: str) -> bytes:
        """Bytes of an artifact recorded in this bundle."""
        return self.artifact_path(relative).read_bytes()

    def artifact_json(self, relative: str) -> Any:
        """An artifact parsed as JSON."""
        return json.loads(self.artifact_bytes(relative))


def write_manifest(root: Path) -> Path:
    """(Re)write ``manifest.json`` from the journal: at finish, or when a crash prevented it."""
    manifest = build_manifest(read_journal(root / JOURNAL).view())
    try:
        replace_derived(
            root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        )
    except OSError as exc:
        raise EvidenceError(
            f"cannot write {MANIFEST} ({exc.strerror or exc}); the journal is complete, and "
            "kmsir resume writes it"
        ) from None
    return root / MANIFEST
