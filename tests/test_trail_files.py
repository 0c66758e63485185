"""Trail files: gzip and plain, Records documents and JSON Lines, malformed input counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from kmsir.trail.files import scan
from kmsir.trail.match import KeyMatcher

KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY}"
MATCHER = KeyMatcher.for_key(ARN)


def event(n: int, *, key: bool, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventID": f"id-{n}",
        "eventTime": f"2026-11-{10 + n % 10:02d}T00:00:00Z",
        "eventName": "Decrypt" if key else "GetObject",
        "eventSource": "kms.amazonaws.com" if key else "s3.amazonaws.com",
    }
    if key:
        base["resources"] = [{"ARN": ARN, "type": "AWS::KMS::Key"}]
    return {**base, **extra}


def write_trail(path: Path, events: list[dict[str, Any]], *, gz: bool = True) -> None:
    data = json.dumps({"Records": events}).encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_folders_gzip_plain_and_json_lines(tmp_path: Path) -> None:
    nested = tmp_path / "AWSLogs" / "111122223333" / "CloudTrail" / "eu-west-1" / "2026" / "11"
    nested.mkdir(parents=True)
    write_trail(nested / "a.json.gz", [event(1, key=True), event(2, key=False)])
    write_trail(nested / "b.json", [event(3, key=True)], gz=False)
    (tmp_path / "export.jsonl").write_text(
        "\n".join(json.dumps(e) for e in [event(4, key=True), event(5, key=False)]) + "\n"
    )
    (tmp_path / "notes.txt").write_text("not a trail file")
    matched, stats = scan([tmp_path], MATCHER, workers=2)
    ids = sorted(json.loads(m)["eventID"] for m in matched)
    assert ids == ["id-1", "id-3", "id-4"]
    assert (stats.files, stats.records, stats.matched) == (3, 5, 3)
    assert not stats.skipped


def test_events_are_kept_unchanged(tmp_path: Path) -> None:
    original = event(1, key=True, requestParameters={"keyId": KEY, "z": [1, 2]})
    write_trail(tmp_path / "a.json.gz", [original])
    matched, _ = scan([tmp_path / "a.json.gz"], MATCHER)
    assert json.loads(matched[0]) == original


def test_malformed_input_is_counted_and_skipped(tmp_path: Path) -> None:
    good = gzip.compress(json.dumps({"Records": [event(1, key=True)]}).encode())
    (tmp_path / "truncated.json.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "lines.jsonl").write_text(
        json.dumps(event(2, key=True))
        + "\nnot json at all\n"
        + json.dumps({"eventID": "x", "resources": [{"ARN": ARN}]})
        + "\n"
    )
    write_trail(tmp_path / "ok.json.gz", [event(3, key=True)])
    matched, stats = scan([tmp_path], MATCHER)
    assert sorted(json.loads(m)["eventID"] for m in matched) == ["id-2", "id-3"]
    assert dict(stats.skipped) == {
        "not a complete gzip file (Compressed file ended before the end-of-stream marker was "
        "reached)": 1,
        "line is not a whole JSON object": 1,
        "record without eventTime": 1,
    }
    assert any("truncated.json.gz" in p for p in stats.problems)


def test_time_window(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    write_trail(tmp_path / "a.json.gz", [event(n, key=True) for n in range(10)])
    since = datetime(2026, 11, 15, tzinfo=timezone.utc)
    matched, _ = scan([tmp_path], MATCHER, since=since)
    assert all(json.loads(m)["eventTime"] >= "2026-11-15" for m in matched)
    assert len(matched) == 5


def compact(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"Records": events}, separators=(",", ":")).encode()


def test_compact_trail_files_take_the_shortcut_with_the_same_result(tmp_path: Path) -> None:
    from kmsir.trail.files import ScanStats, scan_bytes

    events = [{"eventVersion": "1.09", **event(n, key=n % 3 == 0)} for n in range(12)]
    shortcut_stats, split_stats = ScanStats(), ScanStats()
    shortcut = scan_bytes(compact(events), "a", MATCHER, None, None, shortcut_stats)
    # the same records, but not in CloudTrail's key order: the file is split properly
    reordered = [{k: e[k] for k in reversed(list(e))} for e in events]
    split = scan_bytes(compact(reordered), "b", MATCHER, None, None, split_stats)
    assert [json.loads(r) for r in shortcut] == [e for e in events if e["eventName"] == "Decrypt"]
    assert [json.loads(r) for r in split] == [json.loads(r) for r in shortcut]
    assert shortcut_stats.records == split_stats.records == 12


def test_a_needle_inside_an_unrelated_field_is_not_a_match(tmp_path: Path) -> None:
    from kmsir.trail.files import ScanStats, scan_bytes

    decoy = {
        "eventVersion": "1.09",
        **event(1, key=False),
        "requestParameters": {"bucketName": KEY},
    }
    stats = ScanStats()
    assert scan_bytes(compact([decoy]), "x", MATCHER, None, None, stats) == []
    assert stats.records == 1


def test_odd_records_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "eventID": None,
                "eventTime": "2026-11-12T00:00:00",
                "resources": [{"ARN": ARN, "type": "AWS::KMS::Key"}],
            }
        ),
        json.dumps(event(2, key=True))[:-20],  # cut short
    ]
    (tmp_path / "odd.jsonl").write_text("\n".join(lines) + "\n")
    from datetime import datetime, timezone

    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    matched, stats = scan([tmp_path], MATCHER, since=since)
    assert len(matched) == 1  # the naive time is taken as UTC
    assert dict(stats.skipped) == {"line is not a whole JSON object": 1}
