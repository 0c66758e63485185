"""Crash safety, end to end: SIGKILL a demo run at many points, then verify and resume.

Each point runs ``kmsir demo`` in a process (``tests/crashkit.py``) that kills itself at
one precise moment: after a given journal line, half-way through writing one, after AWS
answered a state-changing call but before its result was journaled, or after an artifact's
bytes landed but before its journal line. For every point: ``verify`` passes or names only the
torn final line, ``resume`` finishes the run in the same sandbox world, ``verify`` then passes,
no state-changing call was sent twice, and the report equals an uninterrupted run's apart
from times, hashes of time-stamped content and the resume's own entries.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kmsir import cli
from kmsir.evidence.bundle import read_journal

from .conftest import bundles

CRASHKIT = Path(__file__).with_name("crashkit.py")
# spread over the whole run (the demo journals about 131 entries: one point every 26; each
# point is two runs of the demo, so the matrix is what CI's ten minutes can hold), plus the
# risky moments
POINTS = [
    *(f"entry:{n}" for n in range(2, 132, 26)),
    "torn:31",
    "torn:64",
    "call:1",
    "call:2",
    "artifact:1",
    "artifact:7",
    "artifact:13",
    # the finish: the manifest, then each report written and recorded
    "entry:131",
    "entry:132",
    "torn:132",
    "entry:133",
]
_RESUME_ROWS = re.compile(
    r"^\|[^|]*\|[^|]*\| (run-resumed|run-interrupted|repair|recheck) \|.*\n", re.M
)


#: The longest one run may take (a guard against a hang, not a timing).
TIMEOUT = 120


class Crashkit:
    """``tests/crashkit.py --serve``: each run in a process of its own, forked from a server
    that imported kmsir, boto3 and moto once (see crashkit's docstring). A run is killed at
    its kill point like a process started for it, and shares no state with the others."""

    def __init__(self, outputs: Path) -> None:
        self.outputs = outputs
        self.runs = 0
        self._buffer = b""
        self._server = subprocess.Popen(
            [sys.executable, str(CRASHKIT), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )

    def __call__(
        self, args: list[str], tmp: Path, kill: str = "", *, fork: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kmsir ARGS`` run in ``tmp``, killed at ``kill``; as ``subprocess.run`` returns
        it. Without ``fork``, in the server itself (its first run: the warm-up)."""
        self.runs += 1
        stdout, stderr = (self.outputs / f"{self.runs}.{name}" for name in ("out", "err"))
        env = {
            **os.environ,
            "CRASHKIT_KILL": kill,
            "CRASHKIT_CALLS": str(tmp / "calls.jsonl"),
            "COLUMNS": "200",
        }
        request = {"argv": args, "cwd": str(tmp), "env": env, "fork": fork}
        request.update(stdout=str(stdout), stderr=str(stderr))
        assert self._server.stdin is not None
        self._server.stdin.write(json.dumps(request).encode() + b"\n")
        self._server.stdin.flush()
        pid = self._answer()["pid"] if fork else None
        try:
            code = self._answer()["returncode"]
        except subprocess.TimeoutExpired:
            if pid is not None:  # killed; its answer read, so that the next run gets its own
                os.kill(pid, signal.SIGKILL)
                self._answer()
            raise
        return subprocess.CompletedProcess(
            ["crashkit", *args], code, stdout.read_text(), stderr.read_text()
        )

    def _answer(self) -> dict[str, Any]:
        assert self._server.stdout is not None
        fd = self._server.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            if not ready:
                raise subprocess.TimeoutExpired(["crashkit"], TIMEOUT)
            chunk = os.read(fd, 65536)
            assert chunk, f"the crashkit server stopped (exit {self._server.poll()})"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        try:
            self._server.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()


@pytest.fixture(scope="module")
def kmsir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashkit]:
    """The module's crashkit server."""
    server = Crashkit(tmp_path_factory.mktemp("crashkit-output"))
    yield server
    server.close()


def verify(bundle: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, ["verify", str(bundle)])
    return result.exit_code, result.output


def normalised(report: str, evidence: Path) -> str:
    """The report without what legitimately differs between two runs of the same scenario."""
    text = _RESUME_ROWS.sub("", report).replace(str(evidence.resolve()), "<evidence>")
    text = re.sub(r"^\| resumed \|.*\n", "", text, flags=re.M)  # custody rows of resumes
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?", "<time>", text)
    text = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "<run>", text)
    text = re.sub(r"[0-9a-f]{64}", "<sha256>", text)  # artifacts hold times too
    text = re.sub(r"(\.gz` \| `<sha256>` \| )\d+", r"\1<bytes>", text)  # and so compress apart
    text = re.sub(r"\d+ journal entries, \d+ AWS API calls", "<counts>", text)
    # a step re-run after the interruption writes to its next attempt folder
    text = re.sub(r"(artifacts/\d\d-[\w-]+)\.\d+/", r"\1/", text)
    lines = text.splitlines()
    return "\n".join(
        line
        for n, line in enumerate(lines)
        if line not in lines[:n] or not line.startswith("| `artifacts/")
    )


def _untimed(call: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?", "<time>", call)


def only_bundle(evidence: Path) -> Path:
    (bundle,) = bundles(evidence / "demo-rogue-grant")
    return bundle


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, kmsir: Crashkit) -> tuple[str, list[str]]:
    """An uninterrupted run: in the crashkit server itself, as a process started for it
    would run it (its warm-up: the runs forked after it start warm)."""
    tmp = tmp_path_factory.mktemp("reference")
    done = kmsir(["demo", "--evidence-dir", "ev"], tmp, fork=False)
    assert done.returncode == 0, done.stderr
    report = (only_bundle(tmp / "ev") / "report.md").read_text()
    return normalised(report, tmp / "ev"), (tmp / "calls.jsonl").read_text().splitlines()


@pytest.mark.parametrize("point", POINTS)
def test_killed_run_verifies_resumes_and_matches(
    point: str, tmp_path: Path, reference: tuple[str, list[str]], kmsir: Crashkit
) -> None:
    crashed = kmsir(["demo", "--evidence-dir", "ev"], tmp_path, kill=point)
    assert crashed.returncode == -9, f"not killed at {point}: {crashed.stderr[-500:]}"
    bundle = only_bundle(tmp_path / "ev")

    code, output = verify(bundle)
    assert "Traceback" not in output
    if point.startswith("torn:"):
        assert code == 1
        assert [line for line in output.splitlines() if line.startswith("TAMPERED")] == [
            f"TAMPERED: journal.jsonl line {point.split(':')[1]}: torn tail (incomplete last "
            "line, the run was interrupted while writing it)"
        ]
    else:
        # consistent; and until the run finished and its manifest anchors its end, unproven
        assert code in (0, 4), output

    resumed = kmsir(["resume", str(bundle)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    code, output = verify(bundle)
    assert code == 0 and "note:" not in output, output

    entries = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    assert read_journal(bundle / "journal.jsonl").view().status == "succeeded"
    if point.startswith("torn:"):
        repair = next(e for e in entries if e["type"] == "repair")
        assert repair["data"]["torn_tail"]["line"] == int(point.split(":")[1])

    reference_report, reference_calls = reference
    sent = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert len(sent) == len(set(sent)), f"a state-changing call was sent twice: {sent}"
    # a revocation's cutoff is the moment it is made: the same call at another time
    assert {_untimed(c) for c in sent} <= {_untimed(c) for c in reference_calls}
    report = normalised((bundle / "report.md").read_text(), tmp_path / "ev")
    assert report == reference_report, "\n".join(
        difflib.unified_diff(reference_report.splitlines(), report.splitlines(), lineterm="")
    )


@pytest.mark.parametrize("second", ["entry:3", "entry:5", "entry:8", "torn:4", "artifact:1"])
def test_a_resume_killed_in_turn_still_sends_nothing_twice(
    second: str, tmp_path: Path, reference: tuple[str, list[str]], kmsir: Crashkit
) -> None:
    """Killed after AWS disabled the key (before the journal knew), then killed again while
    resuming: the last resume still reports the change as made, and sends nothing twice."""
    crashed = kmsir(["demo", "--evidence-dir", "ev"], tmp_path, kill="call:2")
    assert crashed.returncode == -9
    bundle = only_bundle(tmp_path / "ev")
    again = kmsir(["resume", str(bundle)], tmp_path, kill=second)
    assert again.returncode == -9, again.stderr[-2000:]
    code, output = verify(bundle)
    assert "Traceback" not in output and (code in (0, 4) or "torn tail" in output), output
    resumed = kmsir(["resume", str(bundle)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    code, output = verify(bundle)
    assert code == 0 and "note:" not in output, output
    sent = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert len(sent) == len(set(sent)), f"a state-changing call was sent twice: {sent}"
    disabled = next(
        e
        for e in reversed(
            [json.loads(x) for x in (bundle / "journal.jsonl").read_text().splitlines()]
        )
        if e["type"] == "step-succeeded" and e["step"] == "disable"
    )
    assert disabled["data"]["before"]["state"] == "Enabled"
    assert disabled["data"]["inverse"] == "kms.enable-key"
    report = normalised((bundle / "report.md").read_text(), tmp_path / "ev")
    assert report == reference[0]
