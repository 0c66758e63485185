"""Checking a bundle: every artifact's hash, the journal chain, the manifest, the files on disk.

``check`` returns the problems (the bundle was altered: exit 1) apart from the notes (what an
interrupted run legitimately leaves: a file written but not yet journaled when the process
died, a temporary file, a manifest from before a resume: ``leftovers`` tells which).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kmsir.errors import EvidenceError, UsageError
from kmsir.evidence.anchoring import verify_anchor
from kmsir.evidence.bundle import (
    ARTIFACTS,
    JOURNAL,
    MANIFEST,
    PLAYBOOK_COPY,
    REPORTS,
    JournalRead,
    NotRegular,
    canonical,
    read_journal,
    read_regular,
    sha256_hex,
)
from kmsir.evidence.entries import RunStarted
from kmsir.evidence.leftovers import derived_temporaries, leftovers, repaired
from kmsir.evidence.manifest import build_manifest
from kmsir.evidence.view import RunView

#: kmsir records every report it writes into a bundle since this version (major, minor).
REPORTS_RECORDED_SINCE = (0, 2)


@dataclass
class Verification:
    """What ``check`` found: problems mean altered, notes explain an interrupted run.

    Without problems the journal is consistent; its end is proven only up to ``proven``
    entries: those the manifest anchors (a finished run), or those a KMS signature over the
    chain head covers (``signed_by``, an anchored run). Lines cut from the end of an
    unproven journal would not show, so such a bundle is never called intact.
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    view: RunView = field(default_factory=RunView)
    torn_tail: str | None = None  # the problem naming a torn last journal line
    proven: int = 0
    signed: int = 0  # entries covered by the anchor signature
    signed_by: str | None = None  # the anchor key's ARN
    #: The anchor key's fingerprint: the journal records the key, so a signature proves
    #: the journal only against a key the reader trusts (compared, or given to ``check``).
    signed_key: str | None = None

    @property
    def finished(self) -> bool:
        """True when the journal ends with the run finished (after any resume)."""
        return self.view.finished is not None

    @property
    def intact(self) -> bool:
        """No problem, and the journal's end is proven."""
        return not self.problems and bool(self.view.lines) and self.proven >= self.view.lines


def verify(root: Path) -> list[str]:
    """Every problem that shows the bundle at ``root`` was altered; empty when intact."""
    return check(root).problems


def check(root: Path, *, trusted_key: str | None = None) -> Verification:
    """Check the bundle at ``root``; see ``Verification``. ``trusted_key`` (PEM): the public
    key the journal anchor must have been signed with."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such bundle directory")
    if not (root / JOURNAL).exists():
        raise UsageError(f"{root}: not an evidence bundle (no {JOURNAL})")
    if not stat.S_ISREG((root / JOURNAL).lstat().st_mode):
        return Verification([f"{JOURNAL}: not a regular file"])
    journal = read_journal(root / JOURNAL)
    view = journal.view()
    result = Verification(list(journal.problems), [], view, journal.torn_tail)
    if view.meta is None:
        if view.lines or not journal.torn_tail:  # else: died writing the first line
            result.problems.append(f"{JOURNAL}: no run-started entry")
        return result
    result.problems += _verify_playbook(root, view.meta)
    result.problems += _verify_artifacts(root, view, result.notes)
    result.problems += _verify_reports(root, view, result.notes)
    consistent = not journal.problems  # a broken chain already explains a manifest mismatch
    problems, anchored = _verify_manifest(root, journal, result.notes, consistent=consistent)
    result.problems += problems
    key = verify_anchor(root, view, result.problems, result.notes, trusted_key)
    if key is not None:
        result.signed, result.signed_by, result.signed_key = key
    result.proven = max(anchored, result.signed)
    return result


def _verify_playbook(root: Path, started: RunStarted) -> Iterator[str]:
    expected = started.playbook.get("sha256")
    try:
        actual = sha256_hex(read_regular(root / PLAYBOOK_COPY))
    except FileNotFoundError:
        yield f"{PLAYBOOK_COPY}: missing"
        return
    except NotRegular:
        yield f"{PLAYBOOK_COPY}: not a regular file"
        return
    if actual != expected:
        yield (
            f"{PLAYBOOK_COPY}: sha256 {actual[:12]}... differs from the journal's "
            f"{str(expected)[:12]}..."
        )


def _verify_artifacts(root: Path, view: RunView, notes: list[str]) -> Iterator[str]:
    for seen in view.artifacts:
        data = seen.record
        relative = data.path
        if not relative.startswith(f"{ARTIFACTS}/") or ".." in relative.split("/"):
            yield f"{JOURNAL} line {seen.seq}: artifact path {relative[:80]!r} is invalid"
            continue
        try:
            content = read_regular(root / relative)
        except FileNotFoundError:
            yield f"{relative}: missing"
            continue
        except NotRegular:
            yield f"{relative}: not a regular file"
            continue
        if sha256_hex(content) != data.sha256 or len(content) != data.bytes:
            yield f"{relative}: content changed (sha256 or size differs from the journal)"
    for relative, item in repaired(view).items():
        try:
            content = read_regular(root / relative)
        except FileNotFoundError:
            yield f"{relative}: missing (a resume recorded it)"
            continue
        except NotRegular:
            yield f"{relative}: not a regular file"
            continue
        if sha256_hex(content) != item.get("sha256"):
            yield f"{relative}: content changed since a resume recorded it"
    explained, unexplained = leftovers(root, view)
    for leftover in explained:
        action = "removes" if "(derived)" in leftover.reason else "records"
        notes.append(f"{leftover.path}: {leftover.reason}; kmsir resume {action} it")
    for relative in unexplained:
        yield f"{relative}: extra file, not recorded in the journal"


def _verify_manifest(
    root: Path, journal: JournalRead, notes: list[str], *, consistent: bool
) -> tuple[list[str], int]:
    """Problems with the manifest, and how many journal entries it anchors (0: none);
    the journal is read whole and up to the line the manifest anchors."""
    view = journal.view()
    finished = view.finished is not None
    try:
        manifest = json.loads(read_regular(root / MANIFEST))
    except FileNotFoundError:
        if view.finished_once:
            # resume makes sure a finished run's manifest exists before continuing it
            return [f"{MANIFEST}: missing (the run finished once, so it was written)"], 0
        if finished:
            # the process died between journaling run-finished and writing the manifest (or
            # it was deleted); it is derived, so nothing is lost, but nothing anchors the end
            notes.append(f"{MANIFEST}: missing though the run finished; kmsir resume writes it")
        return [], 0
    except NotRegular:
        return [f"{MANIFEST}: not a regular file"], 0
    except ValueError:
        return [f"{MANIFEST}: not valid JSON"], 0
    if not isinstance(manifest, dict):
        return [f"{MANIFEST}: not a JSON object"], 0
    if not consistent:
        return [], 0  # the journal's own problems say what changed
    anchor = manifest.get("journal")
    anchored = anchor.get("entries") if isinstance(anchor, dict) else None
    head = anchor.get("head") if isinstance(anchor, dict) else None
    if isinstance(anchored, int) and anchored > view.lines:
        return [
            f"{JOURNAL}: truncated: the manifest anchors {anchored} entries, {view.lines} remain"
        ], 0
    problems = []
    if (
        not isinstance(anchored, int)
        or anchored < 1
        or view.hashes[anchored - 1] != head
        or (anchored < view.lines and not _continued(journal, view, anchored, notes))
    ):
        problems.append(
            f"{MANIFEST}: journal anchor (entries {anchored!r}, head "
            f"{str(head)[:12]}...) does not match the journal"
        )
        anchored = view.lines  # its other fields are still compared with the journal
    try:
        expected = build_manifest(journal.view(upto=anchored))
    except EvidenceError:
        return problems, 0  # the journal problems already explain why
    problems += [
        f"{MANIFEST}: field '{key}' differs from what the journal records"
        for key in sorted(set(expected) | set(manifest))
        # canonical bytes, so that true and 1, or 1 and 1.0, are told apart
        if key != "journal" and canonical(manifest.get(key)) != canonical(expected.get(key))
    ]
    return problems, 0 if problems else anchored


def _continued(journal: JournalRead, view: RunView, anchored: int, notes: list[str]) -> bool:
    """True when the manifest legitimately anchors only a prefix: it was written when the run
    finished (or a report was recorded), and the journal went on with a resume or with more
    report records since (its rewrite was interrupted). Says so in a note."""
    if journal.view(upto=anchored).finished is None:
        return False
    finished = view.finished is not None
    if anchored + 1 in {r.seq for r in view.resumes}:
        notes.append(
            f"{MANIFEST}: from before the resume at line {anchored + 1}; "
            + (
                "the run finished since and kmsir resume rewrites it"
                if finished
                else "rewritten when the run finishes"
            )
        )
        return True
    if set(range(anchored + 1, view.lines + 1)) <= set(view.report_seqs):
        notes.append(
            f"{MANIFEST}: from before the report record(s) from line {anchored + 1}; "
            "kmsir report BUNDLE rewrites it"
        )
        return True
    return False


def _verify_reports(root: Path, view: RunView, notes: list[str]) -> Iterator[str]:
    """Each report file against the last record of it in the journal (never re-rendered:
    templates change between versions)."""
    assert view.meta is not None
    started = view.meta
    recorded = view.reports
    for name in REPORTS:
        path = root / name
        try:
            content: bytes | None = read_regular(path)
        except FileNotFoundError:
            content = None
        except NotRegular:
            yield f"{name}: not a regular file"
            continue
        last = recorded.get(name)
        if last is None:
            if content is None:
                continue
            if _predates_report_records(started):
                notes.append(
                    f"{name}: written by a kmsir from before reports were recorded in the "
                    "journal; its content is not proven (kmsir report BUNDLE records a new one)"
                )
            else:
                yield f"{name}: not recorded in the journal (added or replaced after the run)"
            continue
        wanted = last.record.sha256
        if content is not None and sha256_hex(content) == wanted:
            continue
        left = [
            p
            for p, target in derived_temporaries(root).items()
            if target == name
            and stat.S_ISREG(p.lstat().st_mode)
            and sha256_hex(read_regular(p)) == wanted
        ]
        if left:
            notes.append(
                f"{name}: the report recorded at line {last.seq} was left in {left[0].name} "
                "when kmsir stopped; kmsir report BUNDLE writes it again"
            )
        elif content is None:
            yield f"{name}: missing (recorded at line {last.seq})"
        else:
            yield (
                f"{name}: content differs from the report recorded at line {last.seq} "
                f"(sha256 {sha256_hex(content)[:12]}..., recorded {str(wanted)[:12]}...)"
            )


def _predates_report_records(started: RunStarted) -> bool:
    version = str(started.tool.get("version") or "0")
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    return tuple(parts) < REPORTS_RECORDED_SINCE
