"""Fakes that satisfy kmsir's protocols, for testing actions without a bundle."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir.actions.base import ActionContext, RunInfo
from kmsir.aws import ClientFactory
from kmsir.evidence.bundle import read_outside
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import Record, data_of
from kmsir.prompts import NoPrompter


class MemoryArtifacts:
    """An ArtifactSink that keeps artifacts and journal events in memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []

    def write(self, name: str, data: bytes) -> str:
        assert name not in self.files, f"{name} written twice"
        self.files[name] = data
        return f"artifacts/01-test/{name}"

    def journal(self, record: Record) -> None:
        self.events.append(data_of(record))  # (type, data), as the journal writes it

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return self.files.get(name)

    def outside(self, path: str) -> bytes:
        data, provenance = read_outside(Path(path))  # the real check of other bundles' hashes
        self.events.append(("input-file", provenance))
        return data


def context(clients: ClientFactory, step_id: str = "test") -> tuple[ActionContext, list[Call]]:
    """An ActionContext on ``clients`` whose API calls are collected in the returned list."""
    calls: list[Call] = []
    clients.recorder = calls.append
    ctx = ActionContext(
        step_id=step_id,
        clients=clients,
        prompter=NoPrompter(),
        artifacts=MemoryArtifacts(),
        run=RunInfo("INC-test", "run", "sandbox", True),
        now=lambda: datetime.now(timezone.utc),
    )
    return ctx, calls
