"""`kmsir cloudtrail scan` and `cloudtrail.collect` with local files, as a user runs them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from kmsir.evidence import integrity
from kmsir.sandbox import Sandbox

from .conftest import LoopbackServer, load_playbook, run_playbook
from .test_cli import assert_no_traceback, kmsir
from .test_trail_files import ARN, KEY, event, write_trail


def test_scan_writes_events_and_findings_and_reports_skips(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    deletion = event(
        7,
        key=True,
        eventName="ScheduleKeyDeletion",
        requestParameters={"keyId": KEY, "pendingWindowInDays": 7},
    )
    write_trail(logs / "a.json.gz", [event(1, key=True), event(2, key=False), deletion])
    good = (logs / "a.json.gz").read_bytes()
    (logs / "broken.json.gz").write_bytes(good[:20])
    result = kmsir(
        "cloudtrail",
        "scan",
        str(logs),
        "--key",
        ARN,
        "--out",
        str(tmp_path / "events.jsonl"),
        "--findings-out",
        str(tmp_path / "findings.json"),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["eventID"] for e in events] == ["id-1", "id-7"]  # sorted by time, no window
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert [(f["severity"], f["title"]) for f in findings] == [
        ("critical", "Key scheduled for deletion")
    ]
    assert "not a complete gzip file" in result.stderr and "broken.json.gz" in result.stderr
    assert "matching events" in result.stderr
    assert_no_traceback(result)


def test_scan_to_stdout_with_a_window_and_bad_usage(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [event(n, key=True) for n in range(10)])
    result = kmsir(
        "cloudtrail",
        "scan",
        str(tmp_path),
        "--key",
        KEY,
        "--since",
        "2026-11-15T00:00:00Z",
        "--until",
        "2026-11-17T00:00:00Z",
        "--out",
        "-",
    )
    assert result.returncode == 0, result.stderr
    times = [json.loads(line)["eventTime"] for line in result.stdout.splitlines()]
    assert times == ["2026-11-15T00:00:00Z", "2026-11-16T00:00:00Z", "2026-11-17T00:00:00Z"]
    for args, message in (
        (["--key", "alias/x"], "use --alias"),
        (["--key", KEY, "--since", "yesterday"], "neither a duration"),
    ):
        bad = kmsir("cloudtrail", "scan", str(tmp_path), *args)
        assert bad.returncode == 2 and message in bad.stderr
        assert_no_traceback(bad)
    missing = kmsir("cloudtrail", "scan", str(tmp_path / "nope"), "--key", KEY)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_collect_from_files_in_a_playbook(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key = rogue_grant.keys["payments"]
    logs = tmp_path / "logs"
    logs.mkdir()
    rogue = rogue_grant.grants["rogue"]["id"]
    records = [
        {
            "eventID": "a",
            "eventTime": "2026-11-27T10:00:00Z",
            "eventName": "CreateGrant",
            "recipientAccountId": "123456789012",
            "userIdentity": {
                "arn": "arn:aws:sts::123456789012:assumed-role/ci/x",
                "accountId": "123456789012",
            },
            "requestParameters": {
                "keyId": "alias/payments-prod",
                "granteePrincipal": "arn:aws:iam::444455556666:role/x",
                "operations": ["Decrypt"],
            },
            "responseElements": {"grantId": rogue},
        },
        {"eventID": "b", "eventTime": "2026-11-27T11:00:00Z", "eventName": "GetObject"},
    ]
    (logs / "trail.json.gz").write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    book = tmp_path / "files.yaml"
    book.write_text(f"""\
id: files
title: Collect from files
steps:
  - {{id: snap, action: kms.snapshot, with: {{key: {key["id"]}}}}}
  - id: collect
    action: cloudtrail.collect
    with: {{key: "{{{{ steps.snap.arn }}}}", aliases: "{{{{ steps.snap.aliases }}}}",
           source: files, path: "{logs}", since: 2026-11-01T00:00:00Z,
           until: 2026-11-28T00:00:00Z}}
  - id: findings
    action: cloudtrail.findings
    with: {{events: collect, window: 30d, key: "{{{{ steps.snap.arn }}}}"}}
""")
    result = run_playbook(
        load_playbook(book), rogue_grant.client_factory(), tmp_path / "ev", scenario="rogue-grant"
    )
    assert result.status == "succeeded", result.error
    entries = [
        json.loads(line) for line in (result.bundle / "journal.jsonl").read_text().splitlines()
    ]
    outputs = {e["step"]: e["data"]["outputs"] for e in entries if e["type"] == "step-succeeded"}
    assert outputs["collect"]["count"] == 1  # matched by the alias the snapshot found
    assert outputs["findings"]["by_severity"] == {"high": 1}
    assert integrity.verify(result.bundle) == []


def test_scan_checks_its_window_and_output_before_reading(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [event(1, key=True)])
    bad_window = kmsir(
        "cloudtrail",
        "scan",
        str(tmp_path),
        "--key",
        KEY,
        "--since",
        "2026-11-20T00:00:00Z",
        "--until",
        "2026-11-10T00:00:00Z",
    )
    assert bad_window.returncode == 2 and "is not before --until" in bad_window.stderr
    bad_out = kmsir(
        "cloudtrail",
        "scan",
        str(tmp_path),
        "--key",
        KEY,
        "--out",
        str(tmp_path / "missing" / "x.jsonl"),
    )
    assert bad_out.returncode == 2 and "cannot write" in bad_out.stderr


def test_scan_reads_a_trail_bucket_through_aws_endpoint_url(moto_server: LoopbackServer) -> None:
    import subprocess
    import sys

    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    body = gzip.compress(
        json.dumps({"Records": [event(1, key=True), event(2, key=False)]}).encode()
    )
    s3.put_object(
        Bucket="trail",
        Body=body,
        Key="org/AWSLogs/o-abcdef1234/111122223333/CloudTrail/eu-west-1/2026/11/11/a.json.gz",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmsir",
            "cloudtrail",
            "scan",
            "s3://trail/org",
            "--key",
            ARN,
            "--out",
            "-",
        ],
        capture_output=True,
        text=True,
        env=moto_server.env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["eventID"] for line in result.stdout.splitlines()] == ["id-1"]


def test_a_scan_of_files_loads_no_action_and_no_aws_sdk(tmp_path: Path) -> None:
    """A scan of trail files on disk starts fast: it imports neither the actions nor boto3
    (they come in only to read an ``s3://`` bucket)."""
    import subprocess
    import sys

    write_trail(tmp_path / "a.json.gz", [event(1, key=True), event(2, key=False)])
    code = (
        "import sys\n"
        "from kmsir.cli import main\n"
        f"sys.argv = ['kmsir', 'cloudtrail', 'scan', {str(tmp_path)!r}, '--key', {KEY!r},"
        f" '--out', {str(tmp_path / 'out.jsonl')!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('kmsir.actions', 'boto3')))\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1
