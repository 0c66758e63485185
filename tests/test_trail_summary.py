"""The compact summaries the collect and findings steps leave beside the events
(``trail.summary``): the report read from them says byte for byte what it says when it reads
the events, uses them only when they describe the bundle's very events file, and ``verify``
covers them like any artifact."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir import report
from kmsir.evidence import integrity
from kmsir.evidence.manifest import Bundle
from kmsir.report import trail as report_trail
from kmsir.trail import counts, summary
from kmsir.trail.counts import TrailView


@pytest.fixture
def bundle(demo_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the demo's bundle, free to edit."""
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle, copy)
    return copy


def _summaries(bundle: Path) -> list[Path]:
    return sorted(
        [
            *bundle.glob(f"artifacts/*-collect/{summary.COUNTS_NAME}"),
            *bundle.glob(f"artifacts/*-findings/{summary.INTEREST_NAME}"),
        ]
    )


def _no_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report may not read the events themselves (bounded work: no pass over them)."""

    def refused(*_: Any, **__: Any) -> TrailView:
        raise AssertionError("the report read the events although their summary describes them")

    monkeypatch.setattr(report_trail, "read_events", refused)


def _ordered(view: TrailView) -> tuple[Any, ...]:
    """Everything a view holds, in the order templates and the chart would meet it."""
    return (
        view.count,
        view.first,
        view.last,
        [(hour, list(kinds.items())) for hour, kinds in view.by_bucket.items()],
        list(view.by_category.items()),
        list(view.interesting.items()),
        view.unreadable,
        view.untimed,
        view.damaged,
    )


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_the_report_from_the_summaries_is_the_report_from_the_events(
    fmt: str, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(_summaries(bundle)) == 2  # collect's counts, the findings' events
    with monkeypatch.context() as patched:
        _no_streaming(patched)
        summarised = report.render(bundle, fmt=fmt)
    for path in _summaries(bundle):  # as a bundle written before summaries existed
        path.unlink()
    streamed = report.render(bundle, fmt=fmt)
    assert summarised == streamed
    assert "CreateGrant" in summarised  # the events behind the findings are shown


def test_a_summary_that_is_not_the_journaled_one_is_not_used(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = report.render(bundle, fmt="md")
    counted = next(bundle.glob(f"artifacts/*-collect/{summary.COUNTS_NAME}"))
    forged = json.loads(counted.read_bytes())
    forged["count"] += 1_000_000
    counted.write_text(json.dumps(forged))
    assert report.render(bundle, fmt="md") == expected  # read from the events instead
    assert not integrity.check(bundle).intact  # and verify names the edit


def test_events_changed_since_their_summary_are_read_again(bundle: Path) -> None:
    events = next(bundle.glob("artifacts/*-collect/events.jsonl.gz"))
    lines = gzip.decompress(events.read_bytes()).splitlines()
    events.write_bytes(gzip.compress(b"\n".join(lines[: len(lines) // 2]) + b"\n"))
    context = report.build_context(Bundle.open(bundle))
    assert context["trail"]["count"] == len(lines) // 2  # the file's, not the summary's


def test_findings_pointing_to_events_the_summary_lacks_read_the_events(bundle: Path) -> None:
    findings = next(bundle.glob("artifacts/*-findings/findings.json"))
    events = next(bundle.glob("artifacts/*-collect/events.jsonl.gz"))
    last = json.loads(gzip.decompress(events.read_bytes()).splitlines()[-1])
    found = json.loads(findings.read_text())
    found[0]["event_ids"] = [last["eventID"]]  # an event the findings step did not point to
    findings.write_text(json.dumps(found))
    context = report.build_context(Bundle.open(bundle))
    shown = [e["id"] for f in context["findings"] for e in f["events"]]
    assert last["eventID"] in shown


def _events_file(folder: Path, name: str, records: list[bytes]) -> tuple[Path, bytes]:
    lines = b"".join(r + b"\n" for r in records)
    path = folder / name
    path.write_bytes(gzip.compress(lines, mtime=0))
    return path, lines


def _records(start: int, hours: int) -> Iterator[bytes]:
    names = ["Decrypt", "ListGrants", "CreateGrant", "Encrypt", "DisableKey"]
    for n in range(start, start + hours * 3):
        event: dict[str, Any] = {
            "eventTime": f"2026-11-{20 + n // 72:02d}T{n // 3 % 24:02d}:{n % 60:02d}:00Z",
            "eventName": names[n % len(names)],
            "eventID": f"id-{n}",
            "userAgent": "x" * 3_000,  # trimmed in the events of interest
        }
        if n % 7 == 0:
            event["errorCode"] = "AccessDenied"
        yield json.dumps(event).encode()
    yield b"not json"
    yield json.dumps({"eventTime": "no time", "eventID": f"id-untimed-{start}"}).encode()
    yield json.dumps({"eventTime": "2026-11-21T10:00:00+05:00", "eventName": "Decrypt"}).encode()


def test_summaries_of_many_files_merge_as_reading_them_in_turn(tmp_path: Path) -> None:
    """A collect that fanned out over accounts and Regions kept one file (and one summary)
    per target: merged, they say what reading every file in turn says, in the same order."""
    one, lines_one = _events_file(tmp_path, "a.gz", list(_records(0, 30)))
    two, lines_two = _events_file(tmp_path, "b.gz", list(_records(200, 50)))
    wanted = ["id-5", "id-210", "id-untimed-0", "id-missing"]
    parts = []
    for path, lines in ((one, lines_one), (two, lines_two)):
        data = summary.counts_summary(lines, path.read_bytes())
        assert data is not None
        found = summary.read_counts(data, summary.file_described(path))
        assert found is not None
        parts.append(found)
    interest_data = summary.interest_summary(lines_one + lines_two, b"both", wanted)
    assert interest_data is not None
    interest = summary.read_interest(interest_data, [summary.described(b"both")])
    merged = summary.view_of(parts, interest, wanted)
    streamed = counts.read_events([one, two], wanted)
    assert merged is not None and _ordered(merged) == _ordered(streamed)
    assert streamed.unreadable == 2 and streamed.untimed == 2
    assert len(merged.interesting["id-5"]["userAgent"]) == counts.KEEP_TEXT + 1


def test_a_summary_names_the_events_it_describes(tmp_path: Path) -> None:
    path, lines = _events_file(tmp_path, "a.gz", list(_records(0, 3)))
    data = summary.counts_summary(lines, path.read_bytes())
    assert data is not None
    other = summary.described(b"other events")
    assert summary.read_counts(data, summary.file_described(path)) is not None
    assert summary.read_counts(data, other) is None
    assert summary.read_counts(b"not a summary", summary.file_described(path)) is None
    interest = summary.interest_summary(lines, path.read_bytes(), ["id-1"])
    assert interest is not None
    assert summary.read_interest(interest, [other]) is None
    kept = summary.read_interest(interest, [summary.file_described(path)])
    assert kept is not None
    # events it did not look for: the report must read the events
    assert summary.view_of([], kept, ["id-2"]) is None
    assert summary.view_of([], kept, ["id-1"]) is not None


def test_too_many_wanted_events_write_no_findings_summary() -> None:
    wanted = [f"id-{n}" for n in range(summary.MAX_WANTED + 1)]
    assert summary.interest_summary(b"", b"", wanted) is None


def test_the_ids_wanted_are_the_first_few_of_each_finding() -> None:
    findings = [
        {"event_ids": ["a", "b", "c", "d"]},
        {"event_ids": ["b", 7, "e"]},
        {"event_ids": "not a list"},
        {},
    ]
    assert summary.wanted_ids(findings) == ["a", "b", "c", "e"]


def test_a_record_repeated_under_one_id_is_shown_as_reading_the_events_shows_it(
    tmp_path: Path,
) -> None:
    """Two different records under one event id (collect keeps both, and counts it): the
    findings summary keeps the one a report reading the events would show."""
    first = {"eventTime": "2026-11-20T01:00:00Z", "eventName": "Decrypt", "eventID": "id-0"}
    other = {**first, "eventID": "id-1"}
    changed = {**first, "sourceIPAddress": "203.0.113.66"}
    records = [json.dumps(e).encode() for e in (first, other, changed)]
    path, lines = _events_file(tmp_path, "a.gz", records)
    wanted = ["id-0"]
    data = summary.interest_summary(lines, path.read_bytes(), wanted)
    assert data is not None
    kept = summary.read_interest(data, [summary.file_described(path)])
    streamed = counts.read_events([path], wanted)
    assert kept is not None
    assert kept.interesting == streamed.interesting
    assert kept.interesting[wanted[0]]["sourceIPAddress"] == "203.0.113.66"
