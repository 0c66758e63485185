"""One reading of the journal (DESIGN.md, Layers): entry types are spelt only in
``evidence.entries``, and only ``evidence.view.fold`` reads entries; everything else reads the
RunView it makes. Both are checked on the source, so a sixth fold cannot creep back in."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from kmsir.evidence import entries
from tests.test_old_release import MODES, OLD

SRC = Path(__file__).resolve().parent.parent / "src" / "kmsir"
ENTRIES = SRC / "evidence" / "entries"
#: The modules that handle journal entries themselves: their models, the one reading of them
#: (``view``), the decoding of lines (``bundle.read_journal``) and the writer (``journal``).
READERS = {
    *ENTRIES.glob("*.py"),
    *(SRC / "evidence" / n for n in ("view.py", "bundle.py", "journal.py")),
}
#: Words that are also entry types but mean something else where they appear.
NOT_ENTRY_TYPES = {
    ("actions/cloudtrail.py", "artifact"): "the collect step's output naming its artifact",
    ("actions/cloudtrail_findings.py", "artifact"): "the findings step's output naming its file",
    ("actions/trail_integrity_collect.py", "artifact"): "the collect's integrity output's file",
    ("report/integrity.py", "artifact"): "the integrity part's key naming its file",
    ("report/integrity.py", "recheck"): "the integrity part's offline re-check command",
    ("trail/finding_integrity.py", "artifact"): "the integrity file's own key naming it",
    ("report/findings.py", "artifact"): "the collect step's output naming its artifact",
    ("actions/human.py", "note"): "the name of the note action",
    ("actions/__init__.py", "note"): "the name of the note action in the registry's table",
    ("report/timeline.py", "note"): "the name of the note action",
    ("cli/interactive.py", "note"): "the 'add a note' choice before a step",
    ("prompts.py", "note"): "a key of an answers-file answer",
    ("prompts.py", "decision"): "a key of an answers-file answer",
    ("report/trail.py", "anchor"): "the SVG text-anchor of a chart mark",
    ("sandbox/injects.py", "inject"): "the index field of a scenario's inject record",
    ("tabletop/channel.py", "inject"): "a facilitator command's inject number",
    ("tabletop/session.py", "inject"): "a facilitator command's inject number",
    ("tabletop/inbox.py", "inject"): "the inject number of a command and of its record",
    ("tabletop/replay.py", "inject"): "the index field of a journaled inject record",
    ("tabletop/progress.py", "inject"): "the index field of a scenario's inject record",
    ("actions/kms_blast.py", "artifact"): "the blast-radius step's output naming its file",
    ("actions/merges.py", "artifact"): "a fanned-out step's output naming its file",
    ("actions/kms_blast_enum.py", "note"): "a dependent's note (what a resource is)",
    ("actions/kms_blast_verdict.py", "note"): "a dependent's note (calls, operations)",
    ("report/impact.py", "note"): "a dependent's note in the impact section",
    ("posture/sarif.py", "note"): "SARIF's result level for low and info severities",
    ("sandbox/resource_model.py", "note"): "a planted problem's note in a review scenario",
    ("actions/human_lists.py", "artifact"): "the attach step's output naming its copy",
    ("report/lists.py", "artifact"): "the attach step's output naming its copy",
}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def spelt(root: Path, paths: list[Path]) -> list[str]:
    """Entry types written as string literals in ``paths`` (outside the allowed words)."""
    found = []
    for path in paths:
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in entries.RECORDS
                and (where, node.value) not in NOT_ENTRY_TYPES
            ):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def reads(root: Path, paths: list[Path]) -> list[str]:
    """Places in ``paths`` that take a journal's entries (``.entries``), decode a line
    (``entries.read``) or handle the envelope (``Entry``) instead of reading a RunView."""
    found = []
    for path in paths:
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "entries":
                found.append(f"{where}:{node.lineno}: .entries")
            if isinstance(node, ast.ImportFrom) and node.module == "kmsir.evidence.entries":
                names = {a.name for a in node.names} & {"Entry", "read", "Malformed"}
                found += [f"{where}:{node.lineno}: imports {n}" for n in sorted(names)]
    return found


def test_entry_types_are_spelt_only_in_the_entries_module() -> None:
    assert spelt(SRC, [p for p in modules() if ENTRIES not in p.parents]) == []


def test_the_allowed_words_are_still_there() -> None:
    """An allowance that no longer matches anything is removed, not kept as a loophole."""
    found = {
        (path.relative_to(SRC).as_posix(), node.value)
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(NOT_ENTRY_TYPES) <= found


def test_only_fold_reads_journal_entries() -> None:
    assert reads(SRC, [p for p in modules() if p not in READERS]) == []


def test_the_checks_catch_a_planted_literal_and_a_planted_read(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text(
        "from kmsir.evidence.entries import Entry\n"
        "def done(journal):\n"
        "    return [e for e in journal.entries if e.type == 'step-succeeded']\n"
    )
    assert spelt(tmp_path, [module]) == ["sneaky.py:3: 'step-succeeded'"]
    found = sorted(reads(tmp_path, [module]))
    assert found == ["sneaky.py:1: imports Entry", "sneaky.py:3: .entries"]


@pytest.mark.parametrize("mode", MODES)
def test_old_entries_are_written_back_exactly(mode: str) -> None:
    """Each line of a 0.2.0 journal, read as its typed record and written again, gives the
    same ``data``: new journals keep the format (fields always written stay written)."""
    for line in (OLD / mode / "journal.jsonl").read_text().splitlines():
        raw = json.loads(line)
        kind, data = entries.data_of(entries.read(raw).data)
        assert (kind, data) == (raw["type"], raw["data"]), raw["seq"]


def test_a_malformed_line_is_a_verify_problem_naming_it() -> None:
    raw = {
        "seq": 3,
        "ts": "2026-12-01T10:00:00Z",
        "type": "step-started",
        "step": "disable",
        "data": {"action": 1},
        "prev": None,
        "hash": "0" * 64,
    }
    with pytest.raises(entries.Malformed, match=r"not a valid 'step-started' entry: .*action"):
        entries.read(raw)
    with pytest.raises(entries.Malformed, match="unknown entry type 'step-exploded'"):
        entries.read({**raw, "type": "step-exploded"})
