"""``kmsir cloudtrail scan`` at a terminal: the findings table, where the events go (``--out``),
no trail file found, aliases with or without ``alias/``, a malformed ``eventTime``."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.aws import ClientFactory

from .clikit import Ran, cli
from .conftest import LoopbackServer
from .fakes import context
from .test_trail_files import ARN, KEY, event, write_trail

ACCOUNT = ARN.split(":")[4]
PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:user/mallory"


def kms_call(n: int, name: str, hour: int, **extra: Any) -> dict[str, Any]:
    """A KMS call on the key on 2026-11-20 at ``hour`` by ``PRINCIPAL``."""
    return event(
        n,
        key=True,
        eventName=name,
        eventTime=f"2026-11-20T{hour:02d}:00:00Z",
        userIdentity={"type": "IAMUser", "arn": PRINCIPAL, "accountId": ACCOUNT},
        recipientAccountId=ACCOUNT,
        awsRegion="eu-west-1",
        requestParameters={"keyId": KEY, **extra},
    )


def findings_rows(stderr: str) -> list[list[str]]:
    """The findings table's rows as printed (cells of the lines that start a finding)."""
    table = stderr.split("findings (most severe first)", 1)[1]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] in ("critical", "high", "medium", "low", "info"):
            rows.append(cells)
    return rows


def scan(*args: str | Path) -> Ran:
    return cli("cloudtrail", "scan", *args)


# -- the findings table ---------------------------------------------------------------------


def test_findings_are_shown_most_severe_first_then_by_time(tmp_path: Path) -> None:
    records = [
        kms_call(1, "DisableKeyRotation", 1),  # medium, first in time
        kms_call(2, "DisableKey", 5),  # high, later
        kms_call(3, "ScheduleKeyDeletion", 3, pendingWindowInDays=7),  # critical
        kms_call(4, "DisableKey", 2),  # high, earlier
    ]
    write_trail(tmp_path / "a.json.gz", records)
    ran = scan(tmp_path, "--key", ARN, "--findings-out", tmp_path / "f.json")
    assert ran.exit_code == 0, ran.stderr
    rows = findings_rows(ran.stderr)
    written = json.loads((tmp_path / "f.json").read_text())
    assert len(rows) == len(written)
    assert [r[0] for r in rows[:4]] == ["critical", "high", "high", "medium"]
    shown = [(r[0], r[1], r[2]) for r in rows[:4]]
    assert shown == [
        ("critical", "2026-11-20T03:00:00Z", "ScheduleKeyDeletion"),
        ("high", "2026-11-20T02:00:00Z", "DisableKey"),
        ("high", "2026-11-20T05:00:00Z", "DisableKey"),
        ("medium", "2026-11-20T01:00:00Z", "DisableKeyRotation"),
    ]
    ranks = ["critical", "high", "medium", "low", "info"]
    assert [ranks.index(r[0]) for r in rows] == sorted(ranks.index(r[0]) for r in rows)
    assert all(f"{ACCOUNT}:user/mallory" in r[3] for r in rows[:4])
    assert "Key scheduled for deletion" in rows[0][4]
    # the summary counts them the same way, most severe first
    assert re.search(r"findings\s*│\s*1 critical, 2 high, 1 medium", ran.stderr), ran.stderr


def test_findings_text_from_events_is_shown_inert_and_cut(tmp_path: Path) -> None:
    hostile = "arn:aws:iam::111122223333:user/[bold red]x[/bold red]\x1b[2J" + "y" * 300
    record = kms_call(1, "DisableKey", 1)
    record["userIdentity"]["arn"] = hostile
    write_trail(tmp_path / "a.json.gz", [record])
    ran = scan(tmp_path, "--key", ARN)
    assert ran.exit_code == 0, ran.stderr
    assert "\x1b" not in ran.stderr and "\\x1b[2J" in ran.stderr
    assert "[bold red]x[/bold red]" in ran.stderr  # shown as text, not read as markup
    table = ran.stderr.split("findings (most severe first)", 1)[1]
    assert table.count("y") < 20 and "..." in table  # cut to 60 characters, the cut marked


def test_findings_shown_are_capped_and_the_rest_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsir.cli import trail

    monkeypatch.setattr(trail, "MAX_FINDINGS_SHOWN", 2)
    records = [
        kms_call(1, "DisableKeyRotation", 1),
        kms_call(2, "DisableKey", 2),
        kms_call(3, "ScheduleKeyDeletion", 3, pendingWindowInDays=7),
    ]
    write_trail(tmp_path / "a.json.gz", records)
    ran = scan(tmp_path, "--key", ARN)
    total = sum(int(n) for n in re.findall(r"(\d+) (?:critical|high|medium|low|info)", ran.stderr))
    assert total >= 3
    assert [r[0] for r in findings_rows(ran.stderr)] == ["critical", "high"]
    assert f"and {total - 2} more finding(s): all of them with --findings-out FILE" in ran.stderr
    named = scan(tmp_path, "--key", ARN, "--findings-out", tmp_path / "f.json")
    assert f"all of them in {tmp_path / 'f.json'}" in " ".join(named.stderr.split())


def test_no_findings_no_table(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [event(1, key=False)])
    ran = scan(tmp_path, "--key", ARN)
    assert ran.exit_code == 0, ran.stderr
    assert "findings (most severe first)" not in ran.stderr
    assert re.search(r"findings\s*│\s*none", ran.stderr)


# -- where the matched events go ------------------------------------------------------------


def test_events_go_to_stdout_only_with_out_dash(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [event(1, key=True), event(2, key=False)])
    quiet = scan(tmp_path, "--key", ARN)
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout == ""
    assert "not written: --out FILE, or --out - for stdout" in quiet.stderr
    to_stdout = scan(tmp_path, "--key", ARN, "--out", "-")
    assert [json.loads(line)["eventID"] for line in to_stdout.stdout.splitlines()] == ["id-1"]
    assert "not written" not in to_stdout.stderr
    assert not (tmp_path / "-").exists()
    to_file = scan(tmp_path, "--key", ARN, "--out", tmp_path / "events.jsonl")
    assert to_file.stdout == ""
    assert json.loads((tmp_path / "events.jsonl").read_text())["eventID"] == "id-1"
    assert "not written" not in to_file.stderr


def test_the_help_says_where_the_events_go() -> None:
    text = " ".join(cli("cloudtrail", "scan", "--help", env={"COLUMNS": "120"}).stdout.split())
    assert "to stdout with --out -" in text
    assert "without --out they are counted, not written" in text


# -- no trail file found --------------------------------------------------------------------


def test_a_folder_without_trail_files_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "AWSLogs" / ACCOUNT).mkdir(parents=True)
    (empty / "notes.txt").write_text("not a trail file")
    ran = scan(empty, "--key", ARN)
    assert ran.exit_code == 2
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith("kmsir: error: no trail file found: ")
    assert str(empty) in line and "*.json.gz" in line and "*.jsonl" in line
    assert "Traceback" not in ran.output
    other = tmp_path / "other"
    other.mkdir()
    both = scan(empty, other, "--key", ARN)
    assert both.exit_code == 2 and str(empty) in both.stderr and str(other) in both.stderr


def test_an_empty_folder_next_to_trail_files_is_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "logs").mkdir()
    write_trail(tmp_path / "logs" / "a.json.gz", [event(1, key=True)])
    ran = scan(tmp_path / "logs", tmp_path / "empty", "--key", ARN, "--out", "-")
    assert ran.exit_code == 0, ran.stderr
    assert len(ran.stdout.splitlines()) == 1
    assert "no trail file found here" in ran.stderr and str(tmp_path / "empty") in ran.stderr


def test_an_empty_trail_prefix_is_an_error(moto_server: LoopbackServer, tmp_path: Path) -> None:
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trail", Key="other/readme.txt", Body=b"x")
    env = {"AWS_ENDPOINT_URL": moto_server.endpoint}
    ran = cli("cloudtrail", "scan", "s3://trail/logs", "--key", ARN, env=env)
    assert ran.exit_code == 2, ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert "no trail file found: s3://trail/logs" in line
    assert "logs/AWSLogs/[o-ORGID/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/" in line
    windowed = cli(
        "cloudtrail", "scan", "s3://trail/AWSLogs/", "--key", ARN, "--since",
        "2026-11-01T00:00:00Z", "--until", "2026-11-03T00:00:00Z", env=env,
    )  # fmt: skip
    assert windowed.exit_code == 2
    assert "for the days 2026-11-01 to 2026-11-04" in windowed.stderr
    assert "the prefix is the part before AWSLogs/" in windowed.stderr


def _trail_bucket(moto_server: LoopbackServer) -> dict[str, str]:
    """A trail bucket holding one trail file, of 2026-11-20; the CLI's environment for it."""
    s3 = moto_server.client("s3")
    s3.create_bucket(
        Bucket="quiet-trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    day = f"AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/20"
    data = gzip.compress(json.dumps({"Records": [kms_call(1, "Decrypt", 1)]}).encode())
    s3.put_object(Bucket="quiet-trail", Key=f"logs/{day}/{ACCOUNT}_x.json.gz", Body=data)
    return {"AWS_ENDPOINT_URL": moto_server.endpoint}


WINDOW_BEFORE = ("--since", "2026-11-01T00:00:00Z", "--until", "2026-11-03T00:00:00Z")


def test_a_trail_prefix_without_a_file_in_the_window_is_noted_not_an_error(
    moto_server: LoopbackServer,
) -> None:
    env = _trail_bucket(moto_server)
    ran = cli("cloudtrail", "scan", "s3://quiet-trail/logs", "--key", ARN, *WINDOW_BEFORE, env=env)
    assert ran.exit_code == 0, ran.stderr
    assert "no trail file found" not in ran.stderr
    assert re.search(
        r"noted\s*│\s*1: no trail file in the window: logging may have stopped", ran.stderr
    ), ran.stderr
    assert re.search(r"files\s*│\s*0\b", ran.stderr)
    # the same bucket over the day it holds: read, nothing noted
    inside = cli(
        "cloudtrail", "scan", "s3://quiet-trail/logs", "--key", ARN, "--since",
        "2026-11-19T00:00:00Z", "--until", "2026-11-21T00:00:00Z", "--out", "-", env=env,
    )  # fmt: skip
    assert inside.exit_code == 0, inside.stderr
    assert len(inside.stdout.splitlines()) == 1 and "noted" not in inside.stderr
    # a prefix above no trail log at all is still bad input
    wrong = cli(
        "cloudtrail", "scan", "s3://quiet-trail/other", "--key", ARN, *WINDOW_BEFORE, env=env
    )
    assert wrong.exit_code == 2 and "no trail file found: s3://quiet-trail/other" in wrong.stderr


def test_collect_from_a_trail_bucket_without_a_file_in_the_window_notes_it(
    moto_clients: ClientFactory,
) -> None:
    from kmsir.actions.trail_s3 import NO_FILE_IN_WINDOW

    s3 = moto_clients.client("s3")
    s3.create_bucket(Bucket="trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    day = f"AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/20"
    s3.put_object(Bucket="trail", Key=f"{day}/{ACCOUNT}_x.json.gz", Body=b"{}")
    ctx, _ = context(moto_clients)
    window = {"since": "2026-11-01T00:00:00Z", "until": "2026-11-03T00:00:00Z"}
    params = CollectParams(key=ARN, source="s3", bucket="trail", **window)
    outputs = Collect().run(ctx, params).outputs
    assert outputs["count"] == 0 and outputs["noted"] == {NO_FILE_IN_WINDOW: 1}
    ctx, _ = context(moto_clients)  # a region with no logs: nothing to say it stopped
    params = CollectParams(
        key=ARN, source="s3", bucket="trail", regions=["us-east-1"], **window
    )  # fmt: skip
    assert Collect().run(ctx, params).outputs["noted"] == {}


def test_a_folder_with_files_outside_the_window_is_no_error(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [kms_call(1, "DisableKey", 1)])
    ran = scan(tmp_path, "--key", ARN, *WINDOW_BEFORE)
    assert ran.exit_code == 0, ran.stderr
    assert "no trail file found" not in ran.stderr
    assert re.search(r"matching events\s*│\s*0\b", ran.stderr), ran.stderr


# -- aliases --------------------------------------------------------------------------------


def _alias_call(n: int) -> dict[str, Any]:
    """A call naming the key by its alias only (no resources)."""
    return {
        "eventID": f"alias-{n}",
        "eventTime": "2026-11-20T00:00:00Z",
        "eventName": "DescribeKey",
        "eventSource": "kms.amazonaws.com",
        "recipientAccountId": ACCOUNT,
        "awsRegion": "eu-west-1",
        "requestParameters": {"keyId": "alias/payments"},
    }


@pytest.mark.parametrize(
    "alias", ["payments", "alias/payments", f"arn:aws:kms:eu-west-1:{ACCOUNT}:alias/payments"]
)
def test_an_alias_with_or_without_its_prefix_matches(alias: str, tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [_alias_call(1), event(2, key=True)])
    ran = scan(tmp_path, "--key", ARN, "--alias", alias, "--out", "-")
    assert ran.exit_code == 0, ran.stderr
    assert sorted(json.loads(x)["eventID"] for x in ran.stdout.splitlines()) == ["alias-1", "id-2"]


def test_without_the_alias_the_alias_call_is_not_matched(tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [_alias_call(1), event(2, key=True)])
    ran = scan(tmp_path, "--key", ARN, "--alias", "other", "--out", "-")
    assert [json.loads(x)["eventID"] for x in ran.stdout.splitlines()] == ["id-2"]


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (["--alias", "my payments"], "give alias/NAME or NAME"),
        (["--alias", "alias/"], "give alias/NAME or NAME"),
        (["--alias", "pay*"], "give alias/NAME or NAME"),
        (["--alias", KEY], "a key id; give it in --key"),
        (["--alias", ARN], "a key ARN goes in --key"),
        (["--alias", "arn:aws:kms:eu-west-1:1:alias/x"], "not an alias ARN"),
    ],
)
def test_a_value_that_cannot_be_an_alias_is_refused_with_the_fix(
    args: list[str], fix: str, tmp_path: Path
) -> None:
    write_trail(tmp_path / "a.json.gz", [event(1, key=True)])
    ran = scan(tmp_path, "--key", ARN, *args)
    assert ran.exit_code == 2
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith("kmsir: error: --alias ") and fix in line


@pytest.mark.parametrize("key", ["alias/payments", f"arn:aws:kms:eu-west-1:{ACCOUNT}:alias/p"])
def test_an_alias_given_as_key_is_refused_pointing_to_alias(key: str, tmp_path: Path) -> None:
    write_trail(tmp_path / "a.json.gz", [event(1, key=True)])
    ran = scan(tmp_path, "--key", key)
    assert ran.exit_code == 2
    (line,) = ran.stderr.strip().splitlines()
    assert "use --alias" in line and key in line
    nonsense = scan(tmp_path, "--key", "payments")
    assert nonsense.exit_code == 2 and "for an alias, use --alias" in nonsense.stderr


# -- a malformed eventTime ------------------------------------------------------------------


def _timed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*records, event(9, key=True)]


ODD_TIMES: list[dict[str, Any]] = [
    {**event(1, key=True), "eventTime": 1763596800},  # a number
    {**event(2, key=True), "eventTime": "yesterday"},  # no ISO time
    {**event(3, key=True), "eventTime": "2026-13-45T00:00:00Z"},  # no such day
    {**event(4, key=True), "eventTime": ["2026-11-20T00:00:00Z"]},  # a list
    {k: v for k, v in event(5, key=True).items() if k != "eventTime"},  # none at all
    {**event(6, key=True), "eventTime": None},  # null: no time either
]
EXPECTED = {"record with a malformed eventTime": 4, "record without eventTime": 2}


@pytest.mark.parametrize("layout", ["trail-file", "json-lines"])
def test_a_malformed_event_time_is_counted_as_malformed(layout: str, tmp_path: Path) -> None:
    from kmsir.trail.files import scan as scan_files
    from kmsir.trail.match import KeyMatcher

    records = _timed(ODD_TIMES)
    if layout == "trail-file":
        write_trail(tmp_path / "a.json.gz", records)
    else:
        (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    matched, stats = scan_files([tmp_path], KeyMatcher.for_key(ARN))
    assert [json.loads(m)["eventID"] for m in matched] == ["id-9"]
    assert dict(stats.skipped) == EXPECTED
    ran = scan(tmp_path, "--key", ARN)
    assert ran.exit_code == 0, ran.stderr
    assert re.search(r"skipped\s*│\s*4: record with a malformed eventTime", ran.stderr)
    assert re.search(r"skipped\s*│\s*2: record without eventTime", ran.stderr)


def test_compact_trail_files_count_malformed_times_alike(tmp_path: Path) -> None:
    """CloudTrail's own compact files take the scanner's shortcut: the same reasons."""
    records = [{"eventVersion": "1.09", **r} for r in _timed(ODD_TIMES)]
    data = json.dumps({"Records": records}, separators=(",", ":")).encode()
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(data))
    from kmsir.trail.files import scan as scan_files
    from kmsir.trail.match import KeyMatcher

    _, stats = scan_files([tmp_path], KeyMatcher.for_key(ARN))
    assert dict(stats.skipped) == EXPECTED


def test_collect_from_files_reports_malformed_times_alike(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    write_trail(tmp_path / "a.json.gz", _timed(ODD_TIMES))
    ctx, _ = context(moto_clients)
    params = CollectParams(
        key=ARN, source="files", path=str(tmp_path), since="2026-11-01T00:00:00Z",
        until="2026-11-30T00:00:00Z",
    )  # fmt: skip
    outputs = Collect().run(ctx, params).outputs
    assert outputs["count"] == 1
    assert outputs["skipped"] == EXPECTED
