"""`checklist` (items ticked one by one, each tick journaled, never asked twice) and
`evidence.attach` (an outside file hashed into the bundle), as a responder meets them: in a
run with an answers file, after a crash, in the report and under `verify`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir import report as reports
from kmsir.aws import ClientFactory
from kmsir.errors import PlaybookError
from kmsir.evidence import bundle as evidence_bundle
from kmsir.evidence import integrity
from kmsir.playbook.model import LoadedPlaybook
from kmsir.prompts import Answer, NoPrompter, ScriptedPrompter
from kmsir.run import resume as resuming
from kmsir.run.engine import Engine, RunOptions

from .conftest import bundles, load_playbook, run_playbook

PLAYBOOK = """\
id: hand-off
title: Hand the incident over
inputs:
  screenshot: {type: string, required: true}
steps:
  - id: attach
    action: evidence.attach
    with: {path: "{{ inputs.screenshot }}", description: "Billing alarm, as paged"}
  - id: tasks
    action: checklist
    with:
      items:
        - Legal informed
        - Ticket opened with the app team
        - CI credentials rotated
  - id: after
    action: note
    with: {text: "complete={{ steps.tasks.complete }} not_done={{ steps.tasks.not_done }}"}
"""

ANSWERS = {
    "tasks.1": "done",
    "tasks.2": "not done",
    "tasks.2.reason": "ticket system down, phoned the team lead",
    "tasks.3": "done",
}


def journal(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def ticks(bundle: Path) -> list[tuple[str, str]]:
    return [
        (e["data"]["question"], e["data"]["answer"])
        for e in journal(bundle)
        if e["type"] == "decision" and e["step"] == "tasks"
    ]


@pytest.fixture
def screenshot(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "alarm screenshot.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return path


@pytest.fixture
def playbook_path(tmp_path: Path) -> Path:
    path = tmp_path / "hand-off.yaml"
    path.write_text(PLAYBOOK)
    return path


def test_checklist_and_attachment_are_journaled_reported_and_verified(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, screenshot: Path
) -> None:
    result = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": str(screenshot)},
        answers=ANSWERS,
    )
    assert result.status == "succeeded", result.error
    bundle = result.bundle
    # each item one decision, with who ticked it and why one is not done
    assert ticks(bundle) == [
        ("checklist item 1: Legal informed", "done"),
        ("checklist item 2: Ticket opened with the app team", "not done"),
        ("checklist item 3: CI credentials rotated", "done"),
    ]
    decisions = [e["data"] for e in journal(bundle) if e["type"] == "decision"]
    assert decisions[1]["reason"] == "ticket system down, phoned the team lead"
    assert {d["by"] for d in decisions} == {"test answers"}
    # later steps read the outcome
    note = [e["data"]["text"] for e in journal(bundle) if e["type"] == "note"]
    assert note == ["complete=False not_done=['Ticket opened with the app team']"]
    # the file: its provenance journaled as read, a byte-identical copy kept, verify covers it
    digest = hashlib.sha256(screenshot.read_bytes()).hexdigest()
    (read,) = [e["data"] for e in journal(bundle) if e["type"] == "input-file"]
    assert read["sha256"] == digest and read["path"] == str(screenshot.resolve())
    (copy,) = (bundle / "artifacts").glob("*-attach/attached-alarm-screenshot.png")
    assert copy.read_bytes() == screenshot.read_bytes()
    assert integrity.check(bundle).problems == []
    copy.chmod(0o600)
    copy.write_bytes(copy.read_bytes() + b"x")
    assert any("attached-alarm-screenshot.png" in p for p in integrity.check(bundle).problems)
    # the report shows each item with its tick and the file with its sha256 and description
    md = reports.render(bundle, fmt="md")
    assert "| Legal informed | done | test answers |  |" in md
    assert (
        "| Ticket opened with the app team | **not done** | test answers | ticket system down, "
        "phoned the team lead |" in md
    )
    assert "2 of 3 done" in md
    row = next(line for line in md.splitlines() if line.startswith("| `alarm screenshot.png`"))
    assert "| Billing alarm, as paged |" in row and f"`{digest}`" in row and "| 2056 |" in row
    html = reports.render(bundle, fmt="html")
    assert "Ticket opened with the app team" in html and digest in html
    assert "Billing alarm, as paged" in html and "&#x2610; not done" in html


class CrashOnItem:
    """Answers from ``answers``; the ``n``-th ``ask`` is interrupted (Ctrl-C mid-checklist)."""

    interactive = False

    def __init__(self, answers: dict[str, Any], n: int) -> None:
        self.scripted = ScriptedPrompter(answers, source="test answers")
        self.n = n
        self.asked: list[str] = []

    def has_answer(self, key: str) -> bool:
        return self.scripted.has_answer(key)

    def before_step(self, preview: Any, note: Any) -> Answer | None:
        return self.scripted.before_step(preview, note)

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        self.asked.append(key)
        if len(self.asked) == self.n:
            raise KeyboardInterrupt
        return self.scripted.ask(key, question, choices)

    def confirm(self, key: str, message: str) -> Answer:
        return self.scripted.confirm(key, message)

    def text(self, key: str, question: str, validate: Any) -> Answer:
        return self.scripted.text(key, question, validate)


def test_a_resume_after_a_crash_mid_checklist_asks_only_the_items_not_ticked(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, screenshot: Path
) -> None:
    crashing = CrashOnItem(ANSWERS, n=3)
    with pytest.raises(KeyboardInterrupt):
        run_playbook(
            load_playbook(playbook_path),
            moto_clients,
            tmp_path / "ev",
            inputs={"screenshot": str(screenshot)},
            prompter=crashing,
        )
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    assert [a for _, a in ticks(bundle)] == ["done", "not done"]
    # only item 3 is answered now: asking item 1 or 2 again would be a MissingAnswer
    engine = Engine(
        actions=actions.registry(),
        clients=moto_clients,
        prompter=ScriptedPrompter({"tasks.3": "done"}, source="resume answers"),
    )
    state = resuming.load(bundle)
    options = RunOptions(incident_id="INC-test", evidence_dir=tmp_path / "ev", mode="sandbox")
    resumed = engine.resume(load_playbook(bundle / "playbook.yaml"), state, options)
    assert resumed.status == "succeeded", resumed.error
    assert [a for _, a in ticks(bundle)] == ["done", "not done", "done"]
    (done,) = [
        e["data"] for e in journal(bundle) if e["type"] == "step-succeeded" and e["step"] == "tasks"
    ]
    by = [(i["item"], i["by"]) for i in done["outputs"]["items"]]
    assert by == [
        ("Legal informed", "test answers"),
        ("Ticket opened with the app team", "test answers"),
        ("CI credentials rotated", "resume answers"),
    ]
    assert integrity.check(bundle).problems == []


def test_an_item_not_done_without_a_reason_stops_naming_the_answer_to_add(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, screenshot: Path
) -> None:
    answers = {k: v for k, v in ANSWERS.items() if k != "tasks.2.reason"}
    result = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": str(screenshot)},
        prompter=ScriptedPrompter(answers, source="test answers", fallback=NoPrompter()),
    )
    assert result.status != "succeeded"
    assert "tasks.2.reason" in str(result.error)


def test_a_scripted_tick_must_be_done_or_not_done(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, screenshot: Path
) -> None:
    result = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": str(screenshot)},
        answers={**ANSWERS, "tasks.1": "yes"},
    )
    assert result.status == "failed"
    assert "'yes', not one of: done, not done" in str(result.error)


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ("[]", "at least 1 item"),
        ("[a, b, a]", "listed twice"),
        ("[' ']", "empty"),
        (json.dumps([f"item {n}" for n in range(51)]), "at most 50 items"),
    ],
)
def test_checklist_items_are_checked_when_the_playbook_loads(
    tmp_path: Path, items: str, problem: str
) -> None:
    path = tmp_path / "bad.yaml"
    step = f"{{id: tasks, action: checklist, with: {{items: {items}}}}}"
    path.write_text(f"id: bad\ntitle: Bad\nsteps:\n  - {step}\n")
    with pytest.raises(PlaybookError, match=problem):
        load_playbook(path)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.png", "cannot attach .*missing.png: cannot read"),
        (lambda d: d, "cannot attach .*: a directory, not a regular file"),
        (lambda d: _written(d / "empty.txt", b""), "the file is empty"),
        (lambda d: _written(d / "big.png", b"\0" * (1024 * 1024 + 1)), "more than 1,048,576"),
    ],
    ids=["missing", "a-folder", "empty", "too-large"],
)
def test_a_file_that_cannot_be_attached_fails_the_step_with_a_clear_line(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, make: Any, problem: str
) -> None:
    result = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": str(make(tmp_path))},
        answers=ANSWERS,
    )
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("step 'attach' (evidence.attach): cannot attach")
    assert re.search(problem, result.error)
    assert not list(result.bundle.glob("artifacts/*-attach/*"))


def _attach(moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, path: str) -> str:
    """Run the playbook attaching ``path``; the one-line error of the failed run."""
    result = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": path},
        answers=ANSWERS,
    )
    assert result.status == "failed" and result.error is not None, result.error
    assert "\n" not in result.error
    assert result.error.startswith("step 'attach' (evidence.attach): cannot attach ")
    assert not list(result.bundle.glob("artifacts/*-attach/*"))
    return result.error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_at_once_not_waited_on(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    errors: list[str] = []
    worker = threading.Thread(
        target=lambda: errors.append(_attach(moto_clients, tmp_path, playbook_path, str(fifo))),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=10)
    hung = worker.is_alive()
    if hung:  # opened for reading and waiting for a writer: give it one (EOF) to end it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=20)
    assert not hung, "evidence.attach waited on a FIFO"
    assert errors and re.search(r"pipe: a FIFO, not a regular file", errors[0]), errors


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_device_is_refused_without_reading_it(
    moto_clients: ClientFactory,
    tmp_path: Path,
    playbook_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_bytes = Path.read_bytes

    def guarded(self: Path) -> bytes:  # an unbounded read of /dev/zero never ends
        assert self.resolve() != Path("/dev/zero"), "read /dev/zero to its end"
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    error = _attach(moto_clients, tmp_path, playbook_path, "/dev/zero")
    assert error.endswith("/dev/zero: a character device, not a regular file")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="no /proc here")
def test_a_file_whose_size_is_not_known_ahead_is_read_only_to_the_limit(
    moto_clients: ClientFactory,
    tmp_path: Path,
    playbook_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/proc files say 0 bytes and have more (and /dev/zero-like ones have no end): the read
    stops one byte past the limit."""
    assert Path("/proc/self/status").stat().st_size == 0
    monkeypatch.setattr(evidence_bundle, "MAX_OUTSIDE_BYTES", 64)
    error = _attach(moto_clients, tmp_path, playbook_path, "/proc/self/status")
    assert error.endswith("/proc/self/status: more than 64 bytes")


def _continuing(playbook_path: Path) -> LoadedPlaybook:
    """The playbook with ``on_error: continue`` on the attach step."""
    continuing = playbook_path.with_name("continuing.yaml")
    text = PLAYBOOK.replace(
        "    action: evidence.attach\n", "    action: evidence.attach\n    on_error: continue\n"
    )
    continuing.write_text(text)
    return load_playbook(continuing)


def _file_of_another_bundle(
    moto_clients: ClientFactory, tmp_path: Path, playbook_path: Path, screenshot: Path, which: str
) -> Path:
    """A file of a first run's bundle: its attached copy altered, or a file its journal does
    not record (one planted in it, or the bundle's own journal)."""
    first = run_playbook(
        load_playbook(playbook_path),
        moto_clients,
        tmp_path / "ev",
        inputs={"screenshot": str(screenshot)},
        answers=ANSWERS,
    )
    if which == "altered":
        (copy,) = (first.bundle / "artifacts").glob("*-attach/attached-*")
        copy.chmod(0o600)
        copy.write_bytes(b"altered")
        return copy
    if which == "planted":
        return _written(first.bundle / "artifacts" / "planted.png", b"planted")
    return first.bundle / "journal.jsonl"


@pytest.mark.parametrize(
    ("which", "problem"),
    [
        ("altered", "altered since bundle .* recorded it"),
        ("planted", "planted.png: not an artifact recorded in the journal of "),
        ("journal", "journal.jsonl: not an artifact recorded in the journal of "),
    ],
)
def test_a_file_of_another_bundle_its_journal_does_not_vouch_for_fails_only_the_step(
    moto_clients: ClientFactory,
    tmp_path: Path,
    playbook_path: Path,
    screenshot: Path,
    which: str,
    problem: str,
) -> None:
    """Refused, as a step failure that on_error governs: the attached bytes drive nothing in
    the run (unlike a policy restored from another bundle, which stops it), so the refusal
    alone keeps them out of the evidence."""
    path = _file_of_another_bundle(moto_clients, tmp_path, playbook_path, screenshot, which)
    result = run_playbook(
        _continuing(playbook_path),
        moto_clients,
        tmp_path / "ev2",
        inputs={"screenshot": str(path)},
        answers=ANSWERS,
    )
    (second,) = bundles(tmp_path / "ev2" / "INC-test")
    failed = [e["data"] for e in journal(second) if e["type"] == "step-failed"]
    assert [f["error"].count("\n") for f in failed] == [0], failed  # one line
    assert failed[0]["error"].startswith("step 'attach' (evidence.attach): cannot attach ")
    assert re.search(problem, failed[0]["error"])
    assert not list(second.glob("artifacts/*-attach/*"))
    # on_error: continue was honoured: the run went on to the checklist and the note
    assert [a for _, a in ticks(second)] == ["done", "not done", "done"]
    assert result.bundle == second and integrity.check(second).problems == []


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_attachment_names_never_leave_the_artifact_folder() -> None:
    from kmsir.actions.human_lists import attachment_name

    assert attachment_name("/tmp/x/../../etc/passwd") == "attached-passwd"
    assert attachment_name("C:/Users/me/My Screenshot (2).PNG") == "attached-My-Screenshot-2-.PNG"
    assert attachment_name("..") == "attached-file"
    assert attachment_name("/a/...hidden..txt") == "attached-hidden.txt"
    assert len(attachment_name("x" * 500 + ".png")) <= 128
