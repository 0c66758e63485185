"""Checking a bundle: every artifact's hash, the journal chain, the manifest, the files on disk.

``check`` returns the problems (the bundle was altered: exit 1) apart from the notes (what an
interrupted run legitimately leaves: a file written but not yet journaled when the process
died, a temporary file, a manifest from before a resume). ``leftovers`` is shared with
``resume``, which records each leftover in a ``repair`` entry so the bundle is clean again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError, UsageError
from kmsir.evidence import (
    ARTIFACTS,
    DERIVED,
    JOURNAL,
    MANIFEST,
    PLAYBOOK_COPY,
    QUARANTINE,
    build_manifest,
    canonical,
    finished_entry,
    read_journal,
    sha256_hex,
)

#: ``write_new``/``replace_derived`` temporary names: ``.tmp-<final name>-<8 hex>``.
_TEMP = re.compile(r"^\.tmp-(?P<name>.+)-[0-9a-f]{8}$")


@dataclass
class Verification:
    """What ``check`` found: problems mean altered, notes explain an interrupted run."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: str | None = None  # the problem naming a torn last journal line

    @property
    def finished(self) -> bool:
        """True when the journal ends with the run finished (after any resume)."""
        return finished_entry(self.entries) is not None


@dataclass(frozen=True)
class Leftover:
    """A file an interrupted run left behind unjournaled, and why it is not tampering."""

    path: str
    sha256: str
    bytes: int
    reason: str


def verify(root: Path) -> list[str]:
    """Every problem that shows the bundle at ``root`` was altered; empty when intact."""
    return check(root).problems


def check(root: Path) -> Verification:
    """Check the bundle at ``root``; see ``Verification``."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such bundle directory")
    if not (root / JOURNAL).exists():
        raise UsageError(f"{root}: not an evidence bundle (no {JOURNAL})")
    journal = read_journal(root / JOURNAL)
    result = Verification(list(journal.problems), [], journal.entries, journal.torn_tail)
    started = next((e for e in journal.entries if e.get("type") == "run-started"), None)
    if started is None:
        if journal.entries or not journal.torn_tail:  # else: died writing the first line
            result.problems.append(f"{JOURNAL}: no run-started entry")
        return result
    result.problems += _verify_playbook(root, started)
    result.problems += _verify_artifacts(root, journal.entries, result.notes)
    result.problems += _verify_manifest(root, journal.entries, result.notes)
    return result


def _verify_playbook(root: Path, started: dict[str, Any]) -> Iterator[str]:
    expected = (started.get("data", {}).get("playbook") or {}).get("sha256")
    try:
        actual = sha256_hex((root / PLAYBOOK_COPY).read_bytes())
    except FileNotFoundError:
        yield f"{PLAYBOOK_COPY}: missing"
        return
    if actual != expected:
        yield (
            f"{PLAYBOOK_COPY}: sha256 {actual[:12]}... differs from the journal's "
            f"{str(expected)[:12]}..."
        )


def _recorded(entries: list[dict[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    return {
        str(e["data"].get("path")): {**e["data"], "seq": e["seq"]}
        for e in entries
        if e.get("type") == type_ and isinstance(e.get("data"), dict)
    }


def _repaired(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Files a resume recorded: leftovers and the quarantined torn line."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.get("type") != "repair" or not isinstance(entry.get("data"), dict):
            continue
        for item in entry["data"].get("leftovers") or []:
            found[str(item.get("path"))] = item
        torn = entry["data"].get("torn_tail")
        if isinstance(torn, dict):
            found[str(torn.get("saved_as"))] = torn
    return found


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or relative in DERIVED or relative in (JOURNAL, PLAYBOOK_COPY):
            continue
        yield relative, path


def leftovers(root: Path, entries: list[dict[str, Any]]) -> tuple[list[Leftover], list[str]]:
    """Unjournaled files an interrupted run explains, and every other unjournaled file.

    Explained, only while the run is unfinished (a finished run was never interrupted after
    its last write, or its resume recorded what it found): an artifact whose intent was
    journaled with the same hash but whose write was not, a temporary file holding no more
    than an intended artifact's bytes (a prefix of them once written), a torn journal line an
    interrupted resume saved to ``quarantine/``. A derived file's temporary (manifest, report)
    is explained always: it is never evidence and never exported.
    """
    artifacts = _recorded(entries, "artifact")
    intents = _recorded(entries, "artifact-intent")
    repaired = _repaired(entries)
    unfinished = finished_entry(entries) is None
    explained: list[Leftover] = []
    unexplained: list[str] = []
    for relative, path in _files(root):
        if relative in artifacts or relative in repaired:
            continue
        content = path.read_bytes()
        reason = _why_left(root, relative, content, intents, len(entries), unfinished)
        if reason is None:
            unexplained.append(relative)
        else:
            explained.append(Leftover(relative, sha256_hex(content), len(content), reason))
    return explained, unexplained


def derived_temporaries(root: Path) -> list[Path]:
    """Temporary files of the manifest or a report that a crash left at the bundle's top."""
    return [
        p
        for p in root.iterdir()
        if (temp := _TEMP.fullmatch(p.name)) is not None and temp["name"] in DERIVED
    ]


def _why_left(
    root: Path,
    relative: str,
    content: bytes,
    intents: dict[str, dict[str, Any]],
    entries: int,
    unfinished: bool,
) -> str | None:
    folder, _, name = relative.rpartition("/")
    temp = _TEMP.fullmatch(name)
    if temp is not None and not folder and temp["name"] in DERIVED:
        return f"temporary file of {temp['name']} (derived), left when the run stopped"
    if not unfinished:
        return None
    intent = intents.get(relative)
    if intent is not None:
        if intent.get("sha256") != sha256_hex(content):
            return None
        return f"written but not journaled when the run stopped (intent at line {intent['seq']})"
    final = f"{folder}/{temp['name']}" if temp is not None else relative
    if temp is not None and final in intents:
        written = root / final
        complete = written.read_bytes() if written.is_file() else None
        if complete is not None and not complete.startswith(content):
            return None
        if len(content) > int(intents[final].get("bytes") or 0):
            return None
        return f"temporary file of {final}, left when the run stopped"
    torn = re.fullmatch(rf"{QUARANTINE}/journal-line-(\d+)\.torn", final)
    if torn is not None and int(torn[1]) == entries + 1 and b"\n" not in content:
        return "torn journal line saved by a resume that stopped before recording it"
    return None


def _verify_artifacts(root: Path, entries: list[dict[str, Any]], notes: list[str]) -> Iterator[str]:
    for entry in entries:
        if entry.get("type") != "artifact":
            continue
        data = entry.get("data", {})
        relative = str(data.get("path", ""))
        if not relative.startswith(f"{ARTIFACTS}/") or ".." in relative.split("/"):
            yield f"{JOURNAL} line {entry.get('seq')}: artifact path {relative[:80]!r} is invalid"
            continue
        try:
            content = (root / relative).read_bytes()
        except FileNotFoundError:
            yield f"{relative}: missing"
            continue
        if sha256_hex(content) != data.get("sha256") or len(content) != data.get("bytes"):
            yield f"{relative}: content changed (sha256 or size differs from the journal)"
    for relative, item in _repaired(entries).items():
        try:
            content = (root / relative).read_bytes()
        except FileNotFoundError:
            yield f"{relative}: missing (a resume recorded it)"
            continue
        if sha256_hex(content) != item.get("sha256"):
            yield f"{relative}: content changed since a resume recorded it"
    explained, unexplained = leftovers(root, entries)
    for leftover in explained:
        action = "removes" if "(derived)" in leftover.reason else "records"
        notes.append(f"{leftover.path}: {leftover.reason}; kmsir resume {action} it")
    for relative in unexplained:
        yield f"{relative}: extra file, not recorded in the journal"


def _verify_manifest(root: Path, entries: list[dict[str, Any]], notes: list[str]) -> Iterator[str]:
    finished = finished_entry(entries) is not None
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except FileNotFoundError:
        if _resumed_after_finishing(entries):
            # resume makes sure a finished run's manifest exists before continuing it
            yield f"{MANIFEST}: missing (the run finished once, so it was written)"
        elif finished:
            # the process died between journaling run-finished and writing the manifest;
            # the manifest is derived, so nothing is lost, but nothing anchors the head yet
            notes.append(f"{MANIFEST}: missing though the run finished; kmsir resume writes it")
        return
    except ValueError:
        yield f"{MANIFEST}: not valid JSON"
        return
    if not isinstance(manifest, dict):
        yield f"{MANIFEST}: not a JSON object"
        return
    try:
        expected = build_manifest(entries)
    except (EvidenceError, KeyError, TypeError):
        return  # the journal problems already explain why
    anchor = manifest.get("journal")
    anchored = anchor.get("entries") if isinstance(anchor, dict) else None
    head = anchor.get("head") if isinstance(anchor, dict) else None
    if isinstance(anchored, int) and anchored > len(entries):
        yield (
            f"{JOURNAL}: truncated: the manifest anchors {anchored} entries, {len(entries)} remain"
        )
        return
    if (
        isinstance(anchored, int)
        and 0 < anchored < len(entries)
        and _earlier_version(entries, anchored, head)
    ):
        # written at an earlier finish; the run was resumed since and is rewritten at the end
        expected = build_manifest(entries[:anchored])
        notes.append(
            f"{MANIFEST}: from before the resume at line {anchored + 1}; "
            + (
                "the run finished since and kmsir resume rewrites it"
                if finished
                else "rewritten when the run finishes"
            )
        )
    elif canonical(anchor) != canonical(expected["journal"]):
        yield (
            f"{MANIFEST}: journal anchor (entries {anchored!r}, head "
            f"{str(head)[:12]}...) does not match the journal"
        )
    for key in sorted(set(expected) | set(manifest)):
        if key == "journal":
            continue
        # canonical bytes, so that true and 1, or 1 and 1.0, are told apart
        if canonical(manifest.get(key)) != canonical(expected.get(key)):
            yield f"{MANIFEST}: field '{key}' differs from what the journal records"


def _earlier_version(entries: list[dict[str, Any]], anchored: int, head: Any) -> bool:
    """True when the manifest anchors a finished prefix that a resume continued."""
    return (
        entries[anchored - 1].get("hash") == head
        and entries[anchored - 1].get("type") == "run-finished"
        and entries[anchored].get("type") == "run-resumed"
    )


def _resumed_after_finishing(entries: list[dict[str, Any]]) -> bool:
    """True when a run-resumed follows a run-finished: a manifest was written by then."""
    seen_finish = False
    for entry in entries:
        seen_finish = seen_finish or entry.get("type") == "run-finished"
        if seen_finish and entry.get("type") == "run-resumed":
            return True
    return False
