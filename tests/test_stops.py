"""How a run stops, and who may act meanwhile: every stop says where the evidence is and how to
continue; a full or read-only disk stops the run cleanly; two runs never act on the same
incident or key at once."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL
from tests.journalkit import journal_lines

from .clikit import cli
from .conftest import LoopbackServer, bundles

DISABLE_THEN_WAIT = """\
id: disable-then-wait
title: Disable a key, then hold on
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: disable, action: kms.disable-key, with: {key: "{{ inputs.key }}"}}
  - {id: hold, action: wait, with: {duration: 30m, reason: the other responder looks}}
"""
DISABLE = """\
id: disable
title: Disable a key
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: disable, action: kms.disable-key, with: {key: "{{ inputs.key }}"}}
"""


def _entries(bundle: Path) -> list[dict[str, Any]]:
    return journal_lines(bundle / JOURNAL)


def _one_line(stderr: str, start: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith(start)]
    return line


# -- every way a run stops says how to continue ------------------------------------------------


def test_the_bundle_is_named_when_the_run_starts(tmp_path: Path) -> None:
    done = cli("demo", "--evidence-dir", tmp_path / "ev")
    assert done.exit_code == 0, done.stderr
    (bundle,) = bundles(tmp_path / "ev" / "demo-rogue-grant")
    lines = done.stderr.splitlines()
    first_step = next(n for n, x in enumerate(lines) if "snapshot:" in x)
    assert f"bundle: {bundle}" in lines[:first_step]


@pytest.mark.parametrize(
    ("answers", "status"),
    [({"disable": "abort"}, "aborted"), ({}, "failed")],
    ids=["abort", "failure"],
)
def test_an_abort_or_a_failure_says_where_the_evidence_is_and_how_to_go_on(
    tmp_path: Path, answers: dict[str, str], status: str
) -> None:
    book = tmp_path / "disable.yaml"
    book.write_text(DISABLE)
    key = "alias/payments-prod" if status == "aborted" else "alias/no-such-key"
    answers_file = tmp_path / "answers.yaml"
    answers_file.write_text(json.dumps(answers))
    done = cli(
        "run", book, "-i", f"key={key}", "--sandbox", "rogue-grant", "--answers", answers_file,
        "--evidence-dir", tmp_path / "ev", "--incident", "INC-1",
    )  # fmt: skip
    assert done.exit_code == 1
    (bundle,) = bundles(tmp_path / "ev" / "INC-1")
    line = _one_line(done.stderr, f"kmsir: run {status}: ")
    assert line.endswith(
        f"; the evidence is kept in {bundle}; continue with: kmsir resume {bundle.resolve()}"
    )


def test_a_live_run_is_resumed_with_its_profile_and_answers(
    tmp_path: Path, moto_server: LoopbackServer
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile ir]\nregion = eu-west-1\naws_access_key_id = testing\n"
        "aws_secret_access_key = testing\n"
    )
    book = tmp_path / "disable.yaml"
    book.write_text(DISABLE)
    answers = tmp_path / "answers.yaml"
    answers.write_text("disable: abort\n")
    key = moto_server.client("kms").create_key()["KeyMetadata"]["KeyId"]
    done = cli(
        "run", book, "-i", f"key={key}", "--profile", "ir", "--answers", answers,
        "--evidence-dir", tmp_path / "ev", "--incident", "INC-2",
        env={"AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_CONFIG_FILE": str(config)},
    )  # fmt: skip
    assert done.exit_code == 1, done.stderr
    (bundle,) = bundles(tmp_path / "ev" / "INC-2")
    assert _one_line(done.stderr, "kmsir: run aborted").endswith(
        f"continue with: kmsir resume {bundle.resolve()} --profile ir --answers {answers}"
    )


# -- a full or read-only disk ------------------------------------------------------------------


class _FailingWrites:
    """``os.write`` that fails with ``errno`` once ``after`` writes to files named ``name``
    went through, first writing half of what it was given (a short write), as a full disk
    does."""

    def __init__(self, name: str, after: int, code: int) -> None:
        self.name, self.after, self.code = name, after, code
        self.real = os.write
        self.seen = 0
        self.failed = 0

    def __call__(self, fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if self.name not in Path(target).name:  # the file, or its temporary
            return self.real(fd, data)
        self.seen += 1
        if self.seen <= self.after:
            return self.real(fd, data)
        self.failed += 1
        if self.failed == 1 and len(data) > 1:
            return self.real(fd, bytes(data)[: len(data) // 2])  # then the next call fails
        raise OSError(self.code, os.strerror(self.code))


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def arm(name: str, after: int, code: int = errno.ENOSPC) -> _FailingWrites:
        failing = _FailingWrites(name, after, code)
        monkeypatch.setattr(os, "write", failing)
        return failing

    yield arm
    monkeypatch.undo()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_the_journal_cannot_be_written_and_the_run_stops_cleanly(
    tmp_path: Path, full_disk: Any, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    full_disk("journal.jsonl", after=20, code=code)
    done = cli("demo", "--evidence-dir", tmp_path / "ev")
    monkeypatch.undo()  # space is back
    assert done.exit_code == 1
    (bundle,) = bundles(tmp_path / "ev" / "demo-rogue-grant")
    line = _one_line(done.stderr, "kmsir: error: ")
    assert f"cannot write the journal ({os.strerror(code)}); it ends at entry 20, complete" in line
    assert line.endswith(f"continue with: kmsir resume {bundle.resolve()}")
    assert "Traceback" not in done.output
    # no half line: the journal ends at its last complete entry, which verify proves up to
    assert len(_entries(bundle)) == 20
    verified = cli("verify", bundle)
    assert verified.exit_code == 4, verified.output
    assert _one_line(verified.stdout, "unproven: ").startswith(
        "unproven: consistent up to entry 20 "
    )
    resumed = cli("resume", bundle)
    assert resumed.exit_code == 0, resumed.stderr
    assert cli("verify", bundle).exit_code == 0


@pytest.mark.parametrize(
    ("name", "step"),
    [("grants.json", "snapshot"), ("events.jsonl.gz", "collect")],
    ids=["on_error stop", "on_error continue"],
)
def test_an_artifact_that_cannot_be_written_stops_the_run_and_resume_finishes(
    tmp_path: Path, full_disk: Any, monkeypatch: pytest.MonkeyPatch, name: str, step: str
) -> None:
    """Whatever the step's on_error says (collect's is continue), nothing more runs without
    its evidence; resume runs the step again once there is space."""
    failing = full_disk(name, after=0)
    done = cli("demo", "--evidence-dir", tmp_path / "ev")
    monkeypatch.undo()
    assert failing.failed
    assert done.exit_code == 1
    (bundle,) = bundles(tmp_path / "ev" / "demo-rogue-grant")
    line = _one_line(done.stderr, "kmsir: error: ")
    assert f"step '{step}'" in line and "cannot write artifact artifacts/" in line
    assert "No space left" in line and line.endswith(f"kmsir resume {bundle.resolve()}")
    entries = _entries(bundle)
    assert not [e for e in entries if e["type"] == "step-started" and e["step"] == "revoke"]
    assert not list(bundle.rglob(".tmp-*"))  # nothing half-written is left behind
    assert integrity.check(bundle).intact
    resumed = cli("resume", bundle)
    assert resumed.exit_code == 0, resumed.stderr
    again = [e for e in _entries(bundle) if e["type"] == "step-succeeded" and e["step"] == step]
    assert len(again) == 1  # run again, and done
    assert cli("verify", bundle).exit_code == 0


def test_a_read_only_evidence_dir_is_one_line_and_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        if str(self).startswith(str(tmp_path / "ev")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    done = cli("demo", "--evidence-dir", tmp_path / "ev")
    assert done.exit_code == 1
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("kmsir: error: ") and "Read-only file system" in line
    assert not (tmp_path / "ev").exists()


# -- two runs, one incident, one key ---------------------------------------------------------


def _start_holder(
    tmp_path: Path, server: LoopbackServer, key: str
) -> tuple[subprocess.Popen[str], Path]:
    """A `kmsir run` in another process that disabled ``key`` for incident INC-A and now
    waits; returns it and its bundle once it is waiting."""
    book = tmp_path / "hold.yaml"
    book.write_text(DISABLE_THEN_WAIT)
    answers = tmp_path / "hold-answers.yaml"
    answers.write_text("disable: approve\n")
    run = subprocess.Popen(
        [
            sys.executable, "-m", "kmsir", "run", str(book), "-i", f"key={key}",
            "--incident", "INC-A", "--evidence-dir", str(tmp_path / "ev"), "--answers",
            str(answers),
        ],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = list((tmp_path / "ev" / "INC-A").glob("*/journal.jsonl"))
        if found and any(
            e["type"] == "step-started" and e["step"] == "hold" for e in _entries(found[0].parent)
        ):
            return run, found[0].parent
        assert run.poll() is None, run.communicate()
        time.sleep(0.1)
    run.kill()
    raise AssertionError("the holding run never reached its wait step")


def test_a_second_run_on_the_same_incident_or_key_is_refused_with_the_holder(
    tmp_path: Path, moto_server: LoopbackServer
) -> None:
    kms = moto_server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    holder, held = _start_holder(tmp_path, moto_server, key["KeyId"])
    try:
        book = tmp_path / "disable.yaml"
        book.write_text(DISABLE)
        env = {"AWS_ENDPOINT_URL": moto_server.endpoint}
        ev = tmp_path / "ev"
        common = ["-i", f"key={key['KeyId']}", "--evidence-dir", ev, "--yes"]

        same_incident = cli("run", book, *common, "--incident", "INC-A", env=env)
        assert same_incident.exit_code == 1
        line = _one_line(same_incident.stderr, "kmsir: error: ")
        assert (
            f"incident INC-A is being worked on by run {held.name} (pid {holder.pid} on host"
            in (line)
        )
        assert "pass --force" in line
        assert bundles(ev / "INC-A") == [held]  # refused before any bundle was made

        # another incident, the same key: refused at the change, which is not sent
        kms.enable_key(KeyId=key["KeyId"])  # so that a second DisableKey would be visible
        other = cli("run", book, *common, "--incident", "INC-B", env=env)
        assert other.exit_code == 1
        assert f"is being changed by run {held.name} (pid {holder.pid}" in other.stderr
        (refused,) = bundles(ev / "INC-B")
        failed = next(e for e in _entries(refused) if e["type"] == "step-failed")
        assert "incident INC-A" in failed["data"]["error"]
        assert not [e for e in _entries(refused) if e["type"] == "api-intent"]
        assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

        # --force goes past both locks, and the journal says whose
        forced = cli("run", book, *common, "--incident", "INC-A", "--force", env=env)
        assert forced.exit_code == 0, forced.stderr
        (forced_bundle,) = [b for b in bundles(ev / "INC-A") if b != held]
        overridden = [e["data"] for e in _entries(forced_bundle) if e["type"] == "lock-overridden"]
        assert [o["lock"] for o in overridden] == [
            "incident INC-A",
            f"key {key['Arn']}",
        ]
        assert all(o["holder"]["run_id"] == held.name for o in overridden)
        assert all(o["holder"]["pid"] == holder.pid for o in overridden)

        # resuming the run that is still going stays refused
        going = cli("resume", held, env=env)
        assert going.exit_code == 1
        assert "still writing this bundle" in going.stderr
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=60)
    assert holder.returncode == 130
    # once it stopped, its locks are gone with it: it resumes (past the rest of its wait)
    skip = tmp_path / "skip.yaml"
    skip.write_text("hold: {decision: skip, reason: seen enough}\n")
    resumed = cli("resume", held, "--answers", skip, env={"AWS_ENDPOINT_URL": moto_server.endpoint})
    assert resumed.exit_code == 0, resumed.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 160 KiB tmpfs (a demo bundle takes about 300 KiB), when this machine lets the
    test mount one (root); the tests above simulate the same failures with ``os.write``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def test_a_disk_that_fills_up_mid_run_stops_it_and_resume_finishes_it(small_disk: Path) -> None:
    done = cli("demo", "--evidence-dir", small_disk / "ev")
    assert done.exit_code == 1, done.stderr
    (bundle,) = bundles(small_disk / "ev" / "demo-rogue-grant")
    stops = [x for x in done.stderr.splitlines() if x.startswith("kmsir: ")]
    assert len(stops) == 1 and "No space left on device" in stops[0], done.stderr
    assert stops[0].endswith(f"continue with: kmsir resume {bundle.resolve()}")
    assert "Traceback" not in done.output
    assert cli("verify", bundle).exit_code in (0, 4)  # whatever it holds is consistent
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = cli("resume", bundle)
    assert resumed.exit_code == 0, resumed.stderr
    verified = cli("verify", bundle)
    assert verified.exit_code == 0, verified.output
