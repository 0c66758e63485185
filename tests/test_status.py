"""``kmsir status``: the runs of an evidence directory, each in its state (running, unfinished,
failed, succeeded, open risks) with the command that continues it; whatever lies in the
directory, one line for what does not read, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kmsir.evidence import entries, listing
from kmsir.evidence.bundle import JOURNAL
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.listing import list_runs
from kmsir.evidence.locks import INCIDENT_LOCK, RunLocks
from tests.journalkit import failed, run_started, started, succeeded

from .clikit import cli

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def bundle(
    evidence: Path,
    incident: str,
    minutes: int,
    *,
    steps: tuple[tuple[str, entries.Journaled], ...] = (),
    end: str | None = "succeeded",
    risks: tuple[str, ...] = (),
    mode: str = "sandbox",
) -> BundleWriter:
    """A bundle whose run started ``minutes`` after T0 (ended with ``end``, or not at all);
    returned open when it did not end (its journal still locked, as a live run's is)."""
    moment = T0 + timedelta(minutes=minutes)
    writer = BundleWriter.create(evidence, incident, playbook_raw=b"id: p\n", clock=lambda: moment)
    writer.append(run_started(incident=incident, run_id=writer.run_id, mode=mode))
    for step, record in steps:
        writer.append(record, step=step)
    if risks:
        writer.append(entries.OpenRisks(keys=[], risks=[{"text": text} for text in risks]))
    if end is not None:
        writer.finish(end, None if end == "succeeded" else "step 'disable' failed")
    return writer


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[Path]:
    """Two incidents: INC-1 (a success with an open risk, then a failure), INC-2 (a plain
    success, an interrupted run, a folder that is no bundle); and a folder that is no incident."""
    root = tmp_path / "ev"
    opened = [
        bundle(root, "INC-1", 0, steps=(started("snapshot"), succeeded("snapshot")),
               risks=("outside grant ec4f3378 still active",)),
        bundle(root, "INC-2", 10, steps=(started("snapshot"), succeeded("snapshot"))),
        bundle(root, "INC-1", 20, steps=(started("disable"), failed("disable")), end="failed"),
        bundle(root, "INC-2", 30, steps=(started("disable"),), end=None, mode="live"),
    ]  # fmt: skip
    opened[-1].close()  # the process died: its journal and its locks are free
    (root / "INC-2" / "notes").mkdir()
    (root / "scratch").mkdir()
    yield root
    for writer in opened:
        writer.close()


def states(found: listing.Listing) -> dict[str, list[tuple[str, str | None]]]:
    return {
        incident: [(run.state, run.next) for run in runs]
        for incident, runs in found.incidents.items()
    }


def test_each_run_is_in_its_state_newest_last(evidence: Path) -> None:
    found = list_runs(evidence)
    # incidents in the order of their newest run: INC-1's last is older than INC-2's
    assert states(found) == {
        "INC-1": [("open risks", "report"), ("failed", "resume")],
        "INC-2": [
            ("unreadable", None),  # "notes" sorts by its name, before the run ids' times
            ("succeeded", None),
            ("unfinished", "resume"),
        ],
    }
    first = found.incidents["INC-1"][0]
    assert first.open_risks == ["outside grant ec4f3378 still active"]
    assert first.mode == "sandbox" and first.playbook == "kms-key-compromise"
    assert (first.last_step, first.last_status) == ("snapshot", "succeeded")
    assert first.started is not None and first.started.startswith("2026-12-01T09:00:00")
    failed_run = found.incidents["INC-1"][1]
    assert failed_run.error == "step 'disable' failed" and failed_run.last_status == "failed"
    unfinished = found.incidents["INC-2"][-1]
    assert (unfinished.mode, unfinished.last_step, unfinished.last_status) == (
        "live",
        "disable",
        "incomplete",
    )
    assert found.incidents["INC-2"][0].problem == f"not a run bundle (no {JOURNAL})"
    assert found.strays == ["scratch: not an incident (no run bundle in it)"]


def test_status_prints_a_table_and_the_command_that_continues_each_run(evidence: Path) -> None:
    ran = cli("status", "--evidence-dir", evidence)
    assert ran.exit_code == 0, ran.output
    out = ran.stdout
    assert out.index("INC-1 · 2 run(s)") < out.index("INC-2 · 3 run(s)")
    runs = {r.state: r for runs in list_runs(evidence).incidents.values() for r in runs}
    for state, then in (
        ("failed", "continue with: kmsir resume"),
        ("unfinished", "continue with: kmsir resume"),
        ("open risks (1)", "read them with: kmsir report"),
    ):
        run = runs[state.split(" (")[0]]
        assert f"  {run.run} {state}, {then} {run.path}\n" in out
    assert "kmsir report" not in out.replace(f"kmsir report {runs['open risks'].path}", "")
    row = next(line for line in out.splitlines() if line.startswith(runs["unfinished"].run))
    assert row.split() == [
        runs["unfinished"].run, "unfinished", "live", "kms-key-compromise", "12-01",
        "09:30Z", "disable", "(incomplete)",
    ]  # fmt: skip
    assert f"  notes: cannot be listed: not a run bundle (no {JOURNAL})" in out
    assert "scratch: not an incident (no run bundle in it)" in out
    assert "Traceback" not in ran.output

    as_json = cli("status", "--evidence-dir", evidence, "--format", "json")
    data = json.loads(as_json.stdout)
    assert [i["incident"] for i in data["incidents"]] == ["INC-1", "INC-2"]
    unfinished = data["incidents"][1]["runs"][-1]
    assert unfinished["state"] == "unfinished"
    assert unfinished["continue"] == f"kmsir resume {runs['unfinished'].path}"
    assert data["incidents"][0]["runs"][0]["open_risks"] == ["outside grant ec4f3378 still active"]


def test_a_run_that_holds_its_locks_is_running_not_unfinished(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}
    with RunLocks(root, dict(holder), world=None) as locks:
        locks.incident("INC-9")
        live = bundle(root, "INC-9", 0, steps=(started("collect"),), end=None)
        locks.describe(run_id=live.run_id)
        try:
            (run,) = list_runs(root).incidents["INC-9"]
            assert (run.state, run.next) == ("running", None)
            assert run.holder is not None and run.holder["pid"] == os.getpid()
            shown = cli("status", "--evidence-dir", root).stdout
            assert f"  {live.run_id} is running (pid {os.getpid()} on " in shown
        finally:
            live.close()
        # the journal let go; the incident lock still names it: still running
        assert list_runs(root).incidents["INC-9"][0].state == "running"
    # both let go (the process lives on, and the lock file keeps its words): unfinished
    assert (root / "INC-9" / INCIDENT_LOCK).read_text()
    assert list_runs(root).incidents["INC-9"][0].state == "unfinished"


def test_a_run_writing_its_journal_is_running_without_the_incident_lock(tmp_path: Path) -> None:
    """``run --force`` goes past the incident lock: its journal's lock still tells."""
    root = tmp_path / "ev"
    live = bundle(root, "INC-9", 0, end=None)
    try:
        (run,) = list_runs(root).incidents["INC-9"]
        assert (run.state, run.holder) == ("running", None)
        assert (
            "is running (a kmsir process writes its journal): wait for it"
            in cli("status", "--evidence-dir", root).stdout
        )
    finally:
        live.close()


def test_without_proc_locks_the_holders_pid_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "PROC_LOCKS", tmp_path / "no-such-file")
    root = tmp_path / "ev"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    writer = bundle(root, "INC-9", 0, end=None)
    writer.close()
    lock = root / "INC-9" / INCIDENT_LOCK
    for pid, host, state in (
        (int(gone.stdout), socket.gethostname(), "unfinished"),  # the process is gone
        (os.getpid(), "another-host", "unfinished"),  # cannot be checked from here
        (os.getpid(), socket.gethostname(), "running"),
    ):
        lock.write_text(json.dumps({"pid": pid, "host": host, "run_id": writer.run_id}))
        assert list_runs(root).incidents["INC-9"][0].state == state, (pid, host)


def test_only_the_newest_runs_are_read(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    for minutes in range(5):
        bundle(root, f"INC-{minutes % 2}", minutes)
    found = list_runs(root, limit=3)
    assert found.not_shown == 2
    shown = [run.started or "" for runs in found.incidents.values() for run in runs]
    assert [s[11:16] for s in shown] == ["09:03", "09:02", "09:04"]
    assert list(found.incidents) == ["INC-1", "INC-0"]  # INC-0 has the newest run


def test_the_cap_is_said_at_the_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ev"
    for minutes in range(4):
        bundle(root, "INC-1", minutes)
    monkeypatch.setattr(listing, "MAX_RUNS", 3)
    ran = cli("status", "--evidence-dir", root)
    assert ran.stdout.startswith("1 older run(s) not shown (the newest 3 are)\n"), ran.stdout


def test_what_does_not_read_is_one_line_never_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    good = bundle(root, "INC-1", 0)
    tampered = bundle(root, "INC-1", 1, end=None)
    tampered.close()
    journal = tampered.root / JOURNAL
    journal.write_bytes(journal.read_bytes().replace(b"kms-key-compromise", b"kms-key-compromisE"))
    fifo = root / "INC-1" / "20261201T091000Z-dead"
    fifo.mkdir()
    os.mkfifo(fifo / JOURNAL)  # read, it would hang the listing
    empty = root / "INC-1" / "20261201T092000Z-0000"
    empty.mkdir()
    (empty / JOURNAL).write_bytes(b"")
    found = {r.run: r for r in list_runs(root).incidents["INC-1"]}
    assert found[good.run_id].state == "succeeded"
    assert (found[tampered.run_id].state, found[tampered.run_id].next) == ("unfinished", "verify")
    assert found[tampered.run_id].journal_problems
    assert found[fifo.name].problem == f"{JOURNAL} is not a regular file (never read)"
    assert found[empty.name].problem == (
        "no run recorded (it stopped while writing its first journal line)"
    )
    ran = cli("status", "--evidence-dir", root)
    assert ran.exit_code == 0 and "Traceback" not in ran.output
    assert f"  {tampered.run_id} unfinished, check it with: kmsir verify " in ran.stdout
    good.close()


@pytest.mark.parametrize("where", ["incident", "bundle"])
def test_an_incident_or_a_bundle_folder_lists_its_runs(evidence: Path, where: str) -> None:
    incident = evidence / "INC-1"
    target = incident if where == "incident" else sorted(incident.iterdir())[-1]
    found = list_runs(target)
    assert list(found.incidents) == ["INC-1"]
    expected = ["open risks", "failed"] if where == "incident" else ["failed"]
    assert [r.state for r in found.incidents["INC-1"]] == expected


def test_an_evidence_dir_that_is_not_one_is_said_in_one_line(tmp_path: Path) -> None:
    ran = cli("status", "--evidence-dir", tmp_path / "nowhere")
    assert ran.exit_code == 2
    assert ran.stderr.startswith("kmsir: error: --evidence-dir ") and "does not exist" in ran.stderr
    (tmp_path / "file").write_text("x")
    assert cli("status", "--evidence-dir", tmp_path / "file").exit_code == 2
    (tmp_path / "empty").mkdir()
    ran = cli("status", "--evidence-dir", tmp_path / "empty")
    assert (ran.exit_code, ran.stdout) == (0, f"no runs under {tmp_path / 'empty'}\n")
    assert cli("status", "--evidence-dir", tmp_path / "empty", "--format", "xml").exit_code == 2
