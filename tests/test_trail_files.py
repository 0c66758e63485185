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


OTHER_ACCOUNT = "444455556666"


def org_tree(root: Path) -> None:
    """An organisation trail's folders: ``AWSLogs/o-ORGID/ACCOUNT/CloudTrail/REGION/Y/M/D``,
    two accounts and two Regions, with a digest file beside the logs."""
    org = root / "AWSLogs" / "o-abcdef1234"
    for n, (account, region) in enumerate(
        [("111122223333", "eu-west-1"), (OTHER_ACCOUNT, "us-east-1"), (OTHER_ACCOUNT, "eu-west-1")]
    ):
        day = org / account / "CloudTrail" / region / "2026" / "11" / f"{12 + n:02d}"
        day.mkdir(parents=True)
        name = f"{account}_CloudTrail_{region}_202611{12 + n:02d}T0000Z_a1b2.json.gz"
        write_trail(day / name, [event(n, key=True), event(n + 10, key=False)])
    digest = org / "111122223333" / "CloudTrail-Digest" / "eu-west-1" / "2026" / "11" / "12"
    digest.mkdir(parents=True)
    (digest / "digest.json.gz").write_bytes(gzip.compress(b'{"digestStartTime":"x"}'))


def test_an_organisation_trail_folder_tree_is_read(tmp_path: Path) -> None:
    org_tree(tmp_path)
    matched, stats = scan([tmp_path], MATCHER)
    assert sorted(json.loads(m)["eventID"] for m in matched) == ["id-0", "id-1", "id-2"]
    assert (stats.files, stats.records, stats.matched) == (3, 6, 3)  # the digest unread
    assert not stats.skipped


def test_collect_reads_an_organisation_trail_folder_tree(tmp_path: Path) -> None:
    import boto3
    from moto import mock_aws

    from kmsir.actions.cloudtrail import Collect, CollectParams
    from kmsir.aws import ClientFactory

    from .fakes import context

    org_tree(tmp_path / "trail")
    params = CollectParams(
        key=ARN, source="files", path=str(tmp_path / "trail"), since="2026-11-11T00:00:00Z",
        until="2026-11-30T00:00:00Z",
    )  # fmt: skip
    with mock_aws():  # no call is made: the key is an ARN and the logs are files
        clients = ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1"), region="eu-west-1"
        )
        ctx, calls = context(clients)
        outputs = Collect().run(ctx, params).outputs
    assert calls == []
    assert outputs["count"] == 2 and outputs["first"] == "2026-11-11T00:00:00Z"
    assert outputs["skipped"] == {}


# -- digest files, and paths without a trail file --------------------------------------------

DIGEST = "111122223333_CloudTrail-Digest_eu-west-1_main_eu-west-1_20261112T000000Z.json.gz"


def test_digest_files_are_never_read(tmp_path: Path) -> None:
    from kmsir.trail.files import is_digest, trail_files

    org_tree(tmp_path)
    # digests that a reader would match, were they read: in their folder, beside the logs,
    # and given by name
    named = event(7, key=True)
    folder = tmp_path / "AWSLogs" / "111122223333" / "CloudTrail-Digest" / "eu-west-1"
    folder.mkdir(parents=True)
    write_trail(folder / "plain.json.gz", [named])
    write_trail(tmp_path / DIGEST, [named])
    listed = list(trail_files([tmp_path, tmp_path / DIGEST, folder / "plain.json.gz"]))
    assert listed and not any(is_digest(p) for p in listed)
    assert not any("CloudTrail-Digest" in str(p) for p in listed)
    matched, stats = scan([tmp_path, tmp_path / DIGEST], MATCHER)
    assert "id-7" not in {json.loads(m)["eventID"] for m in matched}
    assert stats.files == 3 and not stats.skipped
    assert not is_digest(tmp_path / "CloudTrail-Digests-notes" / "a.json.gz")


def test_a_folder_of_digests_only_holds_no_trail_file(tmp_path: Path) -> None:
    from .clikit import cli

    folder = tmp_path / "AWSLogs" / "111122223333" / "CloudTrail-Digest" / "eu-west-1"
    folder.mkdir(parents=True)
    write_trail(folder / DIGEST, [event(1, key=True)])
    ran = cli("cloudtrail", "scan", tmp_path, "--key", ARN)
    assert ran.exit_code == 2, ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert "no trail file found: " in line and "CloudTrail-Digest files aside" in line


def _collect(clients: Any, path: str | list[str]) -> dict[str, Any]:
    from kmsir.actions.cloudtrail import Collect, CollectParams

    from .fakes import context

    ctx, calls = context(clients)
    params = CollectParams(
        key=ARN, source="files", path=path, since="2026-11-01T00:00:00Z",
        until="2026-11-30T00:00:00Z",
    )  # fmt: skip
    outputs = Collect().run(ctx, params).outputs
    assert calls == []
    return outputs


def test_collect_from_paths_without_a_trail_file_fails_the_step(
    tmp_path: Path, moto_clients: Any
) -> None:
    import pytest

    from kmsir.errors import ActionError
    from kmsir.trail.files import LOOKED_FOR

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a trail file")
    typo = tmp_path / "trial-logs"
    for given in (str(empty), [str(typo)], [str(empty), str(typo)]):
        with pytest.raises(ActionError) as failed:
            _collect(moto_clients, given)
        (line,) = str(failed.value).splitlines()
        assert line.startswith("no trail file found: "), line
        for path in [given] if isinstance(given, str) else given:
            assert f"{path} (looked for {LOOKED_FOR}" in line
    assert "there is no such file or folder" in line
    # some path with trail files: the others are counted as skipped, not fatal
    logs = tmp_path / "logs"
    logs.mkdir()
    write_trail(logs / "a.json.gz", [event(1, key=True)])
    outputs = _collect(moto_clients, [str(logs), str(empty), str(typo)])
    assert outputs["count"] == 1
    assert outputs["skipped"] == {"no trail file found here": 2}
