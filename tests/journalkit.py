"""Journals for tests: the file as it lies on disk (one parsed JSON object a line, what a
post-mortem author would open), and typed journals built from records and read the way a
journal on disk is read (``entries.read``, then ``fold``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kmsir.evidence import entries
from kmsir.evidence.view import RunView, fold


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the journal at ``path`` (a bundle's ``journal.jsonl``)."""
    raw = path.read_bytes()
    return [json.loads(line) for line in raw.split(b"\n")[:-1] if line.strip()]


#: The ``run-started`` record of a sandbox run of kms-key-compromise.
RUN = entries.RunStarted(
    tool={"name": "kmsir"},
    versions={},
    operator={"arn": "arn:aws:sts::123456789012:user/moto"},
    host="vm",
    location="ev",
    playbook={"id": "kms-key-compromise"},
    incident="INC-7",
    run_id="20261201T100000Z-0000",
    inputs={},
    mode="sandbox",
    simulated=True,
    scenario="rogue-grant",
    region="eu-west-1",
)


def view_of(*lines: tuple[str | None, entries.Journaled]) -> RunView:
    """The run a journal of ``lines`` (each a step id and a record) tells of, read the way
    a journal on disk is read (``entries.read``, then ``fold``)."""
    typed = []
    for seq, (step, record) in enumerate(lines, 1):
        kind, data = entries.data_of(record)
        raw = {
            "seq": seq,
            "ts": f"2026-12-01T10:00:{seq:02d}Z",
            "type": kind,
            "step": step,
            "data": data,
            "prev": None,
            "hash": f"{seq:064x}",
        }
        typed.append(entries.read(json.loads(json.dumps(raw))))
    return fold(typed)


def started(
    step: str,
    *,
    action: str = "kms.disable-key",
    params: dict[str, Any] | None = None,
    mutating: bool = True,
) -> tuple[str, entries.Journaled]:
    return step, entries.StepStarted(
        action=action, name=step, phase=None, params=params or {}, mutating=mutating, inverse=None
    )


def succeeded(
    step: str,
    status: str = "succeeded",
    *,
    action: str = "kms.disable-key",
    outputs: dict[str, Any] | None = None,
) -> tuple[str, entries.Journaled]:
    return step, entries.StepSucceeded(
        action=action,
        status=status,
        summary="done",
        outputs=outputs or {},
        before=None,
        after=None,
        inverse=None,
        inverse_until=None,
    )


def skipped(step: str) -> tuple[str, entries.Journaled]:
    return step, entries.StepSkipped(
        reason="skipped", status="skipped", action="kms.disable-key", name=step, phase=None
    )


def failed(step: str) -> tuple[str, entries.Journaled]:
    return step, entries.StepFailed(
        error="no answer for 'disable'", action="kms.disable-key", name=step, phase=None
    )


def run_started(**fields: Any) -> entries.RunStarted:
    """``RUN`` with ``fields`` changed (a run-started record for a writer under test)."""
    import msgspec

    return msgspec.structs.replace(RUN, **fields)
