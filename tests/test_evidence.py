"""The evidence bundle: hash chain, atomic never-overwrite writes, verify finds every change."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import kmsir
import kmsir.resources
from kmsir import report
from kmsir.errors import EvidenceError, TamperedError, UsageError
from kmsir.evidence import bundle as evidence
from kmsir.evidence import export, integrity
from kmsir.evidence.entries import ApiCall, ApiIntent, ArtifactIntent, Journaled, Repair, RunResumed
from kmsir.evidence.journal import BundleWriter
from tests.journalkit import RUN, journal_lines, run_started, view_of


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_demo_bundle_verifies(demo_bundle: Path) -> None:
    assert integrity.verify(demo_bundle) == []


def test_bundle_layout_and_permissions(demo_bundle: Path) -> None:
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    assert manifest["format"] == "kmsir-bundle/1"
    assert manifest["simulated"] is True and manifest["mode"] == "sandbox"
    assert manifest["status"] == "succeeded"
    assert manifest["operator"]["account"] == "123456789012"
    assert manifest["started"].endswith("Z") and manifest["finished"].endswith("Z")
    assert manifest["playbook"]["sha256"] == evidence.sha256_hex(
        (demo_bundle / "playbook.yaml").read_bytes()
    )
    for artifact in manifest["artifacts"]:
        data = (demo_bundle / artifact["path"]).read_bytes()
        assert evidence.sha256_hex(data) == artifact["sha256"]
        assert artifact["step"] in artifact["path"]
    for path in [demo_bundle, *demo_bundle.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_every_journal_line_is_canonical_and_chained(demo_bundle: Path) -> None:
    lines = (demo_bundle / "journal.jsonl").read_bytes().splitlines()
    prev = None
    for seq, line in enumerate(lines, start=1):
        entry = json.loads(line)
        assert evidence.canonical(entry) == line
        assert entry["seq"] == seq and entry["prev"] == prev
        assert entry["hash"] == evidence.entry_hash(entry)
        assert entry["ts"].endswith("Z")
        prev = entry["hash"]
    types = [json.loads(line)["type"] for line in lines]
    # the run, then the record of each report written (Markdown, HTML)
    assert types[0] == "run-started" and types[-3:] == [
        "run-finished",
        "report-written",
        "report-written",
    ]
    assert "api-call" in types and "decision" in types and "artifact" in types


def test_changing_any_artifact_byte_is_named(demo_bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    for index, artifact in enumerate(manifest["artifacts"]):
        bundle = copy_bundle(demo_bundle, tmp_path / str(index))
        target = bundle / artifact["path"]
        flip_byte(target, target.stat().st_size // 2)
        problems = integrity.verify(bundle)
        assert problems == [
            f"{artifact['path']}: content changed (sha256 or size differs from the journal)"
        ]


def test_changing_any_journal_line_is_named(demo_bundle: Path, tmp_path: Path) -> None:
    count = len((demo_bundle / "journal.jsonl").read_bytes().splitlines())
    for number in range(1, count + 1, 7):
        bundle = copy_bundle(demo_bundle, tmp_path / str(number))
        journal = bundle / "journal.jsonl"
        lines = journal.read_bytes().splitlines(keepends=True)
        offset = (
            sum(len(line) for line in lines[: number - 1]) + lines[number - 1].index(b'"ts":"') + 8
        )
        flip_byte(journal, offset)
        problems = integrity.verify(bundle)
        assert problems, number
        assert problems[0].startswith(f"journal.jsonl line {number}: "), problems


def test_deleted_and_reordered_lines_break_the_chain(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path / "deleted")
    journal = bundle / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:5] + lines[6:]))
    assert any("line 6: chain broken" in p for p in integrity.verify(bundle))

    bundle = copy_bundle(demo_bundle, tmp_path / "swapped")
    journal = bundle / "journal.jsonl"
    journal.write_bytes(b"".join([*lines[:3], lines[4], lines[3], *lines[5:]]))
    assert any("line 4: chain broken" in p for p in integrity.verify(bundle))


def test_truncated_journal_is_caught_by_the_manifest(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    journal = bundle / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-3]))
    assert any("truncated" in p for p in integrity.verify(bundle))


def test_torn_tail_is_reported(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    (bundle / "manifest.json").unlink()
    journal = bundle / "journal.jsonl"
    data = journal.read_bytes()
    lines = data.splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    problems = integrity.verify(bundle)
    assert problems[0] == (
        f"journal.jsonl line {len(lines)}: torn tail (incomplete last line, "
        "the run was interrupted while writing it)"
    )
    # the torn line was the record of report.html: that report is not proven any more
    assert problems[1:] == [
        "report.html: not recorded in the journal (added or replaced after the run)"
    ]


def test_missing_extra_and_playbook_changes(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    first = manifest["artifacts"][0]["path"]
    (bundle / first).unlink()
    (bundle / "artifacts" / "planted.json").write_text("{}")
    with (bundle / "playbook.yaml").open("ab") as handle:
        handle.write(b"# changed\n")
    problems = integrity.verify(bundle)
    assert f"{first}: missing" in problems
    assert "artifacts/planted.json: extra file, not recorded in the journal" in problems
    assert any(p.startswith("playbook.yaml: sha256") for p in problems)


def test_manifest_edits_are_caught(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["operator"]["arn"] = "arn:aws:iam::123456789012:user/someone-else"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert integrity.verify(bundle) == [
        "manifest.json: field 'operator' differs from what the journal records"
    ]


def test_a_report_rendered_again_is_recorded_and_verifies(
    demo_bundle: Path, tmp_path: Path
) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    before = (bundle / "report.md").read_bytes()
    report.write(bundle, fmt="md")
    assert (bundle / "report.md").read_bytes() == before  # the same report, months later
    assert integrity.check(bundle).intact
    records = [e for e in journal_lines(bundle / "journal.jsonl") if e["step"] is None]
    last = records[-1]
    assert last["type"] == "report-written"
    assert last["data"]["path"] == "report.md"
    assert last["data"]["sha256"] == evidence.sha256_hex(before)
    assert last["data"]["kmsir"] == kmsir.__version__
    template = kmsir.resources.templates_dir() / "report.md.j2"
    assert last["data"]["template_sha256"] == evidence.sha256_hex(template.read_bytes())


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("report.md", lambda data: data + b"\nNothing happened after all.\n"),
        ("report.html", lambda data: b"<h1>nothing happened</h1>"),
        ("report.md", None),
    ],
    ids=["appended to", "replaced", "deleted"],
)
def test_an_altered_report_is_tampering(
    demo_bundle: Path, tmp_path: Path, name: str, change: Any
) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    path = bundle / name
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(path.read_bytes()))
    (problem,) = integrity.verify(bundle)
    assert problem.startswith(f"{name}: ")
    assert ("missing" if change is None else "content differs from the report recorded") in problem
    with pytest.raises(TamperedError):  # and no export archives it under a valid checksum
        export.archive_bytes(bundle)


def test_a_report_kmsir_report_out_writes_elsewhere_is_not_recorded(
    demo_bundle: Path, tmp_path: Path
) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path / "b")
    before = (bundle / "journal.jsonl").read_bytes()
    report.write(bundle, fmt="html", out=tmp_path / "elsewhere.html")
    assert (bundle / "journal.jsonl").read_bytes() == before


@pytest.mark.parametrize("incident", ["../../etc", "a/b", "..", ".hidden", "", "x" * 65, "a b"])
def test_unsafe_incident_ids_are_rejected(incident: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="incident id"):
        BundleWriter.create(tmp_path, incident, playbook_raw=b"id: x\n")
    assert list(tmp_path.iterdir()) == []


def test_artifacts_are_never_overwritten_and_names_are_checked(tmp_path: Path) -> None:
    clock = lambda: datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)  # noqa: E731
    writer = BundleWriter.create(tmp_path, "INC-1", playbook_raw=b"id: x\n", clock=clock)
    assert writer.run_id.startswith("20261128T093000Z-")
    writer.append(run_started(playbook={"sha256": evidence.sha256_hex(b"id: x\n")}))
    first = writer.write_artifact(1, "snap", "key.json", b'{"a": 1}')
    with pytest.raises(EvidenceError, match="never overwritten"):
        writer.write_artifact(1, "snap", "key.json", b'{"a": 2}')
    assert (writer.root / first.path).read_bytes() == b'{"a": 1}'
    for bad in ("../x.json", "a/b/c.json", ".hidden", "a/../b"):
        with pytest.raises(EvidenceError, match="not allowed"):
            writer.write_artifact(1, "snap", bad, b"x")
    writer.finish("succeeded")
    assert integrity.verify(writer.root) == []
    assert not list(writer.root.rglob(".tmp-*"))


def test_malformed_entries_are_reported_not_crashed_on(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    journal = bundle / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    last["data"] = "not a mapping"
    journal.write_bytes(b"".join([*lines[:-1], evidence.canonical(last) + b"\n"]))
    problems = integrity.verify(bundle)
    assert problems[0] == (
        f"journal.jsonl line {len(lines)}: "
        "not a journal entry (fields missing or of the wrong type)"
    )


def test_manifest_type_changes_are_caught(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["simulated"] = 1
    manifest["journal"]["entries"] -= 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    problems = integrity.verify(bundle)
    assert "manifest.json: field 'simulated' differs from what the journal records" in problems
    assert any(p.startswith("manifest.json: journal anchor") for p in problems)


def test_retried_steps_write_to_their_own_folder(tmp_path: Path) -> None:
    writer = BundleWriter.create(tmp_path, "INC-1", playbook_raw=b"id: x\n")
    writer.append(run_started(playbook={"sha256": evidence.sha256_hex(b"id: x\n")}))
    first = writer.write_artifact(2, "snap", "key.json", b"1")
    second = writer.write_artifact(2, "snap", "key.json", b"2", attempt=2)
    assert (first.path, second.path) == (
        "artifacts/02-snap/key.json",
        "artifacts/02-snap.2/key.json",
    )
    writer.finish("succeeded")
    assert integrity.verify(writer.root) == []


def unfinished_writer(tmp_path: Path) -> BundleWriter:
    writer = BundleWriter.create(tmp_path, "INC-1", playbook_raw=b"id: x\n")
    writer.append(run_started(playbook={"sha256": evidence.sha256_hex(b"id: x\n")}))
    writer.write_artifact(1, "snap", "key.json", b'{"a": 1}')
    return writer


def test_crash_leftovers_are_notes_and_planted_files_problems(tmp_path: Path) -> None:
    writer = unfinished_writer(tmp_path)
    # the process died after the bytes landed and before their journal line
    intended = "artifacts/01-snap/grants.json"
    writer.append(
        ArtifactIntent(path=intended, sha256=evidence.sha256_hex(b"[]"), bytes=2), step="snap"
    )
    (writer.root / intended).write_bytes(b"[]")
    (writer.root / "artifacts/01-snap/.tmp-grants.json-0123abcd").write_bytes(b"[")
    (writer.root / ".tmp-manifest.json-89abcdef").write_bytes(b"{")
    checked = integrity.check(writer.root)
    assert checked.problems == []
    assert sorted(n.split(":")[0] for n in checked.notes) == [
        ".tmp-manifest.json-89abcdef",
        "artifacts/01-snap/.tmp-grants.json-0123abcd",
        intended,
    ]
    # the same path with other bytes, or a temporary name nothing intended, was planted
    (writer.root / intended).write_bytes(b"[1]")
    (writer.root / "artifacts/01-snap/.tmp-evil.json-0123abcd").write_bytes(b"x")
    problems = integrity.check(writer.root).problems
    assert f"{intended}: extra file, not recorded in the journal" in problems
    assert (
        "artifacts/01-snap/.tmp-evil.json-0123abcd: extra file, not recorded in the journal"
        in problems
    )


def test_reopen_quarantines_a_torn_tail_before_cutting_it(tmp_path: Path) -> None:
    writer = unfinished_writer(tmp_path)
    writer.close()
    journal = writer.root / "journal.jsonl"
    torn = b'{"data":{"reason":"half a li'
    with journal.open("ab") as handle:
        handle.write(torn)
    assert integrity.check(writer.root).torn_tail
    reopened, repaired = BundleWriter.reopen(writer.root)
    assert repaired["torn_tail"]["line"] == 4  # run-started, intent, artifact, then torn
    saved = writer.root / repaired["torn_tail"]["saved_as"]
    assert saved.read_bytes() == torn
    assert journal.read_bytes().endswith(b"}\n")
    reopened.append(Repair(**repaired))
    reopened.append(
        RunResumed(
            tool={}, versions={}, operator={}, host="vm", location="ev", previous={}, resume_at=None
        )
    )
    reopened.finish("succeeded")
    assert integrity.check(writer.root).problems == []
    saved.write_bytes(b"something else")
    assert integrity.check(writer.root).problems == [
        f"{repaired['torn_tail']['saved_as']}: content changed since a resume recorded it"
    ]


def test_a_finished_run_without_its_manifest_is_a_note(tmp_path: Path) -> None:
    writer = unfinished_writer(tmp_path)
    writer.finish("succeeded")
    (writer.root / "manifest.json").unlink()  # died between run-finished and the manifest
    checked = integrity.check(writer.root)
    assert checked.problems == [] and checked.finished
    assert checked.notes == [
        "manifest.json: missing though the run finished; kmsir resume writes it"
    ]


def test_a_change_answered_with_a_server_error_may_have_been_made() -> None:
    """Resume re-checks a change AWS answered with a 5xx (it may have been carried out), and
    trusts a 4xx (refused: nothing was done)."""

    def call(n: int, status: int | None) -> list[tuple[str | None, Journaled]]:
        intent = ApiIntent(service="kms", operation="DisableKey", call=n)
        if status is None:
            return [("act", intent)]  # no answer came (a reset, a timeout, a crash)
        code = None if status < 300 else "X"
        result = ApiCall(
            service="kms", operation="DisableKey", call=n, http_status=status, error_code=code
        )
        return [("act", intent), ("act", result)]

    view = view_of(
        (None, RUN), *call(1, 200), *call(2, 400), *call(3, 503), *call(4, None), *call(5, 500)
    )
    assert [c.call for c in view.steps["act"].carried.sent] == [1, 3, 4, 5]
    assert [c.record.call for c in view.world] == [1, 3, 4, 5]
