"""Hostile CloudTrail: attacker-built events fed to every consumer of trail data.

An attacker who can write to a trail bucket, forge an export or merely choose their user agent
and session name controls much of what kmsir reads. Every payload below goes through the
scanner (``kmsir cloudtrail scan``, compact trail files and JSON Lines), every source of
``cloudtrail.collect`` (``lookup``, ``files``, ``s3``, ``athena``, ``lake``),
``cloudtrail.findings`` and both report formats. Whatever the payload: no traceback, no
internal error; a record that cannot be used is counted and named, the rest processed; the
attacker's text stays text (escaped, never markup, never a terminal control).
"""

from __future__ import annotations

import functools
import gzip
import html.parser
import json
import re
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from kmsir import report
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.cloudtrail_findings import Findings, FindingsParams
from kmsir.aws import ClientFactory
from kmsir.evidence.manifest import Bundle
from kmsir.trail.catalogue import TRAIL_EVENTS
from kmsir.trail.files import scan
from kmsir.trail.finding import Context
from kmsir.trail.findings import findings
from kmsir.trail.match import KeyMatcher

from .clikit import Ran, cli
from .conftest import REPO, load_playbook, run_playbook
from .fakes import context
from .test_report import rendered_with_whole_tables


@pytest.fixture(autouse=True)
def _unpaced_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """LookupEvents pacing (2 calls a second, tested in test_aws.py) is not what these
    tests look at: without it, forty collects do not wait twenty seconds."""
    from kmsir.aws import pacing

    monkeypatch.setattr(pacing, "PACING", pacing.Pacing({}))


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
ACCOUNT = "111122223333"
OUTSIDE = "444455556666"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{KEY}"
#: An alias of the key every scan and collect matches too (forged alias references).
ALIAS = "alias/pay"
#: Characters that must never reach a reader's terminal or page as they are.
RAW_CONTROLS = ("\x1b", "\x9b", "\x07", "\u202e", "\x00")

Record = dict[str, Any] | bytes

# -- payloads ------------------------------------------------------------------------------

#: Text aimed at whoever reads what kmsir makes of the event: every one carries a marker
#: (PWNED, evil) so that what it turned into can be found.
TEXTS: dict[str, str] = {
    "script-tag": "<script>document.title='PWNED'</script>",
    "img-onerror": "<img src=x onerror=\"document.title='PWNED'\">",
    "javascript-link": "[PWNED](javascript:document.title='x') <a href=\"javascript:x\">evil</a>",
    "md-link-breakout": "](http://evil.example/x) [PWNED](http://evil.example/y)",
    "md-table-pipes": "PWNED | broken | row ||",
    "md-line-start": "# PWNED heading\n> PWNED quote\n- PWNED item\n1. PWNED list\n---",
    "md-backticks": "`` PWNED ` ``` code ` ``",
    "md-autolinks": "<http://evil.example/a> www.evil.example https://evil.example/b a@evil.ex",
    "ansi-clear-screen": "\x1b[2J\x1b[HPWNED",
    "osc-0-title": "\x1b]0;PWNED\x07",
    "osc-8-hyperlink": "\x1b]8;;http://evil.example/\x1b\\PWNED\x1b]8;;\x1b\\",
    "c1-csi": "\x9b2JPWNED",
    "bidi-override": "\u202ePWNED.exe",
}


def base(n: int, arn: str = ARN, **fields: Any) -> dict[str, Any]:
    """A well-formed DisableKey by an outside role, naming the key twice (resources and
    request), ``n`` minutes into the incident window; ``fields`` replace or add fields."""
    account = arn.split(":")[4]
    event: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:attacker",
            "arn": f"arn:aws:sts::{OUTSIDE}:assumed-role/intruder/attacker",
            "accountId": OUTSIDE,
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "arn": f"arn:aws:iam::{OUTSIDE}:role/intruder",
                    "userName": "intruder",
                }
            },
        },
        "eventTime": f"2026-11-28T10:{n % 60:02d}:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "DisableKey",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2.15",
        "requestParameters": {"keyId": arn},
        "responseElements": None,
        "eventID": f"hostile-{n}",
        "readOnly": False,
        "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": arn}],
        "eventType": "AwsApiCall",
        "recipientAccountId": account,
    }
    event.update(fields)
    return event


def good(arn: str = ARN) -> dict[str, Any]:
    """The one ordinary event next to every payload: a Decrypt the day before the window."""
    return {
        **base(0, arn),
        "eventID": "good-1",
        "eventName": "Decrypt",
        "eventTime": "2026-11-26T09:00:00Z",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{arn.split(':')[4]}:assumed-role/app/i-1",
            "accountId": arn.split(":")[4],
        },
        "sourceIPAddress": "10.0.0.1",
    }


def text_payload(text: str, arn: str) -> list[Record]:
    """The text everywhere an attacker chooses it (user agent, session name, request,
    source, error), and once as the event name and error code."""
    caller = base(1, arn)
    caller["userAgent"] = text
    caller["sourceIPAddress"] = text
    caller["userIdentity"]["arn"] = f"arn:aws:sts::{OUTSIDE}:assumed-role/intruder/{text}"
    caller["userIdentity"]["principalId"] = f"AROAEXAMPLE:{text}"
    caller["requestParameters"] = {"keyId": arn, "encryptionContext": {text: text}}
    caller["errorMessage"] = text
    named = base(2, arn, eventName=text, errorCode=text)
    return [caller, named]


def _raw(event: dict[str, Any]) -> bytes:
    """As CloudTrail writes a record: compact, UTF-8 (JSON escapes only C0 controls)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def _deep(levels: int, arn: str) -> bytes:
    """A record whose request parameters are ``levels`` arrays deep (as JSON text: no
    Python structure could even be built that deep)."""
    marker = b'"requestParameters":{"keyId":"' + arn.encode() + b'"}'
    assert marker in _raw(base(3, arn))
    nested = b'"requestParameters":' + b"[" * levels + b"]" * levels
    return _raw(base(3, arn)).replace(marker, nested)


def structural(arn: str) -> dict[str, list[Record]]:
    """Payloads that break the shape of a record rather than its reader."""
    key_id = arn.rsplit("/", 1)[1]
    no_time = base(4, arn)
    del no_time["eventTime"]
    operations = [f"Op{i}" for i in range(100_000)]
    return {
        "user-agent-1mb": [base(5, arn, userAgent="PWNED" + "A" * 1_000_000)],
        "invalid-utf8": [_raw(base(6, arn)).replace(b'"aws-cli/2.15"', b'"aws-\xff\xfe\xc0-cli"')],
        "lone-surrogate": [
            _raw(base(7, arn))
            .replace(b'"aws-cli/2.15"', b'"PWNED\\ud800"')
            .replace(b'"192.0.2.10"', b'"\\udfff192.0.2.10"')
        ],
        "nul-character": [base(8, arn, userAgent="PWNED\x00after")],
        "user-identity-string": [base(9, arn, userIdentity="arn:aws:iam::444455556666:root")],
        "user-identity-list": [base(10, arn, userIdentity=[{"arn": "x"}, "y"])],
        "user-identity-null": [base(11, arn, userIdentity=None)],
        "resources-null": [base(12, arn, resources=None)],
        "resources-string": [base(13, arn, resources=arn)],
        "resources-not-dicts": [base(14, arn, resources=[1, "x", None, [arn], True])],
        "resources-number": [base(15, arn, resources=5)],
        "event-time-garbage": [base(16, arn, eventTime="yesterday at noon")],
        "event-time-number": [base(17, arn, eventTime=1764237600)],
        "event-time-missing": [no_time],
        "event-name-number": [base(18, arn, eventName=42)],
        "event-name-list": [base(19, arn, eventName=["DisableKey"])],
        "event-id-object": [base(20, arn, eventID={"id": "x"})],
        "request-string": [base(21, arn, requestParameters="keyId=" + arn)],
        "request-list": [base(22, arn, requestParameters=[arn, {"keyId": arn}])],
        "request-deep-900": [_deep(900, arn)],
        "request-deep-10000": [_deep(10_000, arn)],
        "error-code-object": [base(23, arn, errorCode={"code": "AccessDeniedException"})],
        "user-agent-object": [base(24, arn, userAgent={"PWNED": [1, 2]})],
        "resources-100k": [
            base(
                25,
                arn,
                resources=[{"ARN": arn, "type": "AWS::KMS::Key"}]
                + [{"ARN": f"{arn[:-36]}{i:036d}", "type": "AWS::KMS::Key"} for i in range(99_999)],
            )
        ],
        "grant-tokens-100k": [
            base(
                26,
                arn,
                eventName="CreateGrant",
                requestParameters={
                    "keyId": arn,
                    "granteePrincipal": "PWNED" + "G" * 100_000,
                    "operations": operations,
                    "grantTokens": ["token"] * 100_000,
                },
            )
        ],
        "duplicate-event-id": [
            base(27, arn, eventName="Decrypt", eventID="dup-1"),
            base(28, arn, eventName="ScheduleKeyDeletion", eventID="dup-1"),
        ],
        "alias-reference-short": [  # ":alias/" with fewer parts than an alias ARN has
            {
                "eventSource": "kms.amazonaws.com",
                "eventName": "Decrypt",
                "eventTime": "2026-11-01T00:00:00Z",
                "requestParameters": {"keyId": "x:alias/pay"},
            },
            *(
                base(29 + n, arn, resources=[], requestParameters={"keyId": ref})
                for n, ref in enumerate(
                    ["x:alias/pay", ":alias/pay", "arn:alias/pay", "a:b:c:alias/pay", ":alias/"]
                )
            ),
            base(34, arn, resources=[], responseElements={"keyId": "x:alias/pay"}),
        ],
        "not-objects": [
            json.dumps(arn).encode(),
            b"42",
            b"null",
            json.dumps([arn, key_id]).encode(),
        ],
    }


@functools.cache
def payloads(arn: str = ARN) -> dict[str, list[Record]]:
    """Every payload by name: its hostile records (the ordinary event is added by each test).
    Built once per key ARN (the 100,000-item payloads take a tenth of a second to build, more
    than most cases' own work) and only read: no consumer changes the records it is given."""
    return {
        **{f"text:{name}": text_payload(text, arn) for name, text in TEXTS.items()},
        **structural(arn),
    }


NAMES = list(payloads())


def as_bytes(record: Record) -> bytes:
    return record if isinstance(record, bytes) else _raw(record)


def trail_file(records: list[Record]) -> bytes:
    """A compact gzipped trail file, as CloudTrail writes them (the scanner's fast path)."""
    return gzip.compress(b'{"Records":[' + b",".join(map(as_bytes, records)) + b"]}", mtime=0)


def json_lines(records: list[Record]) -> bytes:
    return b"\n".join(map(as_bytes, records)) + b"\n"


def naming_key(records: list[Record], key_id: str = KEY) -> int:
    """How many records mention the key at all (each must be kept or counted as skipped)."""
    return sum(1 for r in records if key_id.encode() in as_bytes(r))


def assert_inert(text: str) -> None:
    """No terminal control or bidi override left as it is."""
    found = [c for c in RAW_CONTROLS if c in text]
    assert not found, f"raw control characters reach the reader: {found}"


def assert_clean_cli(ran: Ran) -> None:
    assert ran.exit_code == 0, ran.output[-2000:]
    assert "Traceback" not in ran.output and "internal error" not in ran.output


# -- (a) the scanner -------------------------------------------------------------------------


def _skipped(stderr: str) -> int:
    return sum(int(n.replace(",", "")) for n in re.findall(r"skipped\s*\S\s*([\d,]+):", stderr))


@pytest.mark.parametrize("layout", ["trail-file", "json-lines"])
@pytest.mark.parametrize("name", NAMES)
def test_scan_survives_and_accounts_for_every_record(
    name: str, layout: str, tmp_path: Path
) -> None:
    records = [good(), *payloads()[name]]
    path = tmp_path / ("trail.json.gz" if layout == "trail-file" else "export.jsonl")
    path.write_bytes(trail_file(records) if layout == "trail-file" else json_lines(records))
    out, found = tmp_path / "events.jsonl", tmp_path / "findings.json"
    ran = cli(
        "cloudtrail", "scan", path, "--key", ARN, "--alias", ALIAS,
        "--out", out, "--findings-out", found,
    )  # fmt: skip
    assert_clean_cli(ran)
    assert_inert(ran.stderr)
    kept = out.read_bytes().splitlines()
    assert b'"good-1"' in b"\n".join(kept)
    assert isinstance(json.loads(found.read_text()), list)
    # every record that names the key is either among the events or counted as skipped
    assert len(kept) + _skipped(ran.stderr) >= naming_key(records), ran.stderr
    assert len(kept) <= len(records)


def test_scan_counts_records_that_are_not_objects(tmp_path: Path) -> None:
    records: list[Record] = [good(), b"42", b"null", b'"text"', b"[1,2]"]
    (tmp_path / "export.jsonl").write_bytes(json_lines(records))
    (tmp_path / "trail.json").write_bytes(
        b'{"Records": [' + b", ".join(map(as_bytes, records)) + b"]}"
    )
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert len(matched) == 2  # the ordinary event, from each file
    assert sum(stats.skipped.values()) == 8, stats.skipped


def test_a_document_too_deep_to_decode_is_split_record_by_record(tmp_path: Path) -> None:
    records = [good(), _deep(10_000, ARN), {**good(), "eventID": "good-2"}]
    (tmp_path / "trail.json").write_bytes(
        b'{"Records": [' + b", ".join(map(as_bytes, records)) + b"]}"
    )
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert sorted(json.loads(m)["eventID"] for m in matched) == ["good-1", "good-2"]
    assert sum(stats.skipped.values()) == 1 and "nested" in str(stats.skipped)


def test_invalid_utf8_costs_one_record_not_the_file(tmp_path: Path) -> None:
    bad = _raw(base(6)).replace(b'"aws-cli/2.15"', b'"\xff"')
    records = [good(), bad, {**good(), "eventID": "good-2"}]
    (tmp_path / "trail.json").write_bytes(
        b'{"Records": [' + b", ".join(map(as_bytes, records)) + b"]}"
    )
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert sorted(json.loads(m)["eventID"] for m in matched) == ["good-1", "good-2"]
    assert dict(stats.skipped) == {"record is not valid UTF-8": 1}


def test_conflicting_duplicate_event_ids_are_both_kept_and_counted(tmp_path: Path) -> None:
    records = structural(ARN)["duplicate-event-id"]
    path = tmp_path / "trail.json.gz"
    path.write_bytes(trail_file([good(), *records]))
    out = tmp_path / "events.jsonl"
    ran = cli("cloudtrail", "scan", path, path, "--key", ARN, "--out", out)  # the file twice
    assert_clean_cli(ran)
    names = sorted(json.loads(line)["eventName"] for line in out.read_text().splitlines())
    # the same event read twice is one event; a different event under the same id is not
    assert names == ["Decrypt", "Decrypt", "ScheduleKeyDeletion"]
    assert "duplicate eventID" in ran.stderr


def test_scan_by_key_id_reads_the_keys_account_from_odd_events(tmp_path: Path) -> None:
    """Given a key id, the findings look for the key's account in the events' resources."""
    odd = [base(1, resources=5), base(2, resources={"ARN": ARN}), base(3, resources=ARN)]
    (tmp_path / "trail.json.gz").write_bytes(trail_file([good(), *odd]))
    ran = cli("cloudtrail", "scan", tmp_path, "--key", KEY, "--out", tmp_path / "o.jsonl")
    assert_clean_cli(ran)
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 4


def test_scan_summary_shows_file_names_as_text(tmp_path: Path) -> None:
    name = "t\x1b[2J\x1b]0;PWNED\x07[bold]x[link=http:evil]\u202egz.json.gz"
    (tmp_path / name).write_bytes(trail_file([good()])[:30])  # a truncated gzip file
    ran = cli("cloudtrail", "scan", tmp_path, "--key", ARN, "--out", tmp_path / "o.jsonl")
    assert_clean_cli(ran)
    assert_inert(ran.stderr)
    assert "\\x1b[2J" in ran.stderr and "\\u202e" in ran.stderr
    assert "[bold]x[link=http:evil]" in ran.stderr  # not read as markup
    line = next(
        x for x in ran.stderr.splitlines() if "not a complete gzip file" in x and "t\\x1b" in x
    )
    assert "\\x07" in line


def test_scan_prints_events_to_a_terminal_as_inert_json(tmp_path: Path) -> None:
    """On a terminal (a pseudo-terminal here: the terminal is the point), the events on
    stdout are the same JSON with nothing raw a terminal could obey."""
    import os
    import pty
    import select
    import subprocess
    import sys

    text = "\x9b2J\u202ePWNED\x7f\x1b]0;x\x07"
    path = tmp_path / "trail.json.gz"
    path.write_bytes(trail_file([good(), *text_payload(text, ARN)]))
    master, slave = pty.openpty()
    command = [sys.executable, "-m", "kmsir", "cloudtrail", "scan", str(path), "--key", ARN]
    command += ["--out", "-"]
    child = subprocess.Popen(command, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    while True:  # read while it writes: a full terminal buffer would stop it
        ready, _, _ = select.select([master], [], [], 60)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # the terminal closed: the child is done
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert child.wait(timeout=60) == 0
    events = [json.loads(line) for line in shown.splitlines() if line.strip()]
    assert len(events) == 3 and text in [e["userAgent"] for e in events]
    for raw in (b"\x1b", b"\x07", b"\x7f", "\x9b".encode(), "\u202e".encode()):
        assert raw not in shown, raw
    assert b"\\u009b2J\\u202ePWNED\\u007f\\u001b]0;x\\u0007" in shown


def test_scan_errors_naming_input_stay_one_visible_line(tmp_path: Path) -> None:
    ran = cli("cloudtrail", "scan", tmp_path / "nope\nsecond line\x1b[2J", "--key", ARN)
    assert ran.exit_code == 2
    (line,) = ran.stderr.strip().splitlines()
    assert "no such file or folder" in line and "\\x1b[2J" in line
    assert_inert(ran.stderr)


def test_cut_files_cost_only_themselves(moto_clients: ClientFactory, tmp_path: Path) -> None:
    """A truncated .gz and a document cut inside a record, next to a good file: on disk (the
    scanner) and in a trail bucket (collect)."""
    whole = trail_file([good()])
    cut_document = b'{"Records":[' + as_bytes({**good(), "eventID": "good-2"}) + b',{"eventV'
    files = {"a.json.gz": whole, "b.json.gz": whole[: len(whole) // 2], "c.json": cut_document}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ran = cli("cloudtrail", "scan", *(tmp_path / n for n in files), "--key", ARN, "--out", "-")
    assert_clean_cli(ran)
    assert sorted(json.loads(line)["eventID"] for line in ran.stdout.splitlines()) == [
        "good-1",
        "good-2",
    ]
    assert "not a complete gzip file" in ran.stderr and "cut short" in ran.stderr
    s3 = moto_clients.client("s3")
    s3.create_bucket(Bucket="trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for name, data in files.items():
        key = f"AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/26/{name}"
        s3.put_object(Bucket="trail", Key=key, Body=data)
    outputs, ctx = run_collect(
        moto_clients, CollectParams(key=ARN, source="s3", bucket="trail", since="7d")
    )
    assert sorted(collected_ids(ctx)) == ["good-1", "good-2"]
    assert sum(outputs["skipped"].values()) == 2, outputs["skipped"]


def test_a_failed_query_is_one_visible_line(moto_clients: ClientFactory) -> None:
    """Athena's reason for a failed query may quote the data it choked on."""
    from kmsir.errors import ActionError

    athena = moto_clients.client("athena")
    ctx, _ = context(moto_clients)
    status = {"State": "FAILED", "StateChangeReason": "HIVE_BAD_DATA: 'x\n\x1b[2JPWNED'\nmore"}
    with Stubber(athena) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": status}})
        params = CollectParams(key=ARN, source="athena", database="d", table="t")
        with pytest.raises(ActionError) as failed:
            Collect().run(ctx, params)
    (line,) = str(failed.value).splitlines()
    assert "\\x1b[2JPWNED" in line
    assert_inert(line)


# -- (b) cloudtrail.collect, every source, and (c) cloudtrail.findings ------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[ClientFactory]:
    """One moto account for the module's per-payload collects (five sources times every
    payload), with its clients made once: the collects read it (a key to describe, a trail
    bucket and Athena results each case adds under its own name), none changes what another
    reads. Starting moto and making its clients per case cost more than most collects.
    Set up before the per-test dummy environment: the session's credentials are given."""
    import boto3
    from moto import mock_aws

    dummy = {f"aws_{k}": "testing" for k in ("access_key_id", "secret_access_key", "session_token")}
    with mock_aws():
        yield ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1", **dummy),
            region="eu-west-1",
            guard_send=True,
        )


@pytest.fixture(scope="module")
def world_key(world: ClientFactory) -> str:
    """The ARN of a key in ``world`` (what a lookup describes before it looks events up)."""
    return key_arn(world)


def run_collect(clients: ClientFactory, params: CollectParams) -> tuple[dict[str, Any], Any]:
    """Collect, then findings over what was collected; both outputs and the context."""
    ctx, _ = context(clients)
    ctx.now = lambda: NOW
    collected = Collect().run(ctx, params)
    found = Findings().run(ctx, FindingsParams(events="test", key=params.key, window="24h"))
    written = ctx.artifacts.files["findings.json"]  # type: ignore[attr-defined]
    assert found.outputs["count"] == len(json.loads(written))
    json.dumps(collected.outputs, ensure_ascii=False).encode()  # journaled as UTF-8 JSON
    json.dumps(found.outputs, ensure_ascii=False).encode()
    return collected.outputs, ctx


def collected_ids(ctx: Any) -> list[Any]:
    lines = gzip.decompress(ctx.artifacts.files["events.jsonl.gz"]).splitlines()
    return [json.loads(line).get("eventID") for line in lines]


def assert_accounted(outputs: dict[str, Any], ctx: Any, records: list[Record]) -> None:
    assert "good-1" in collected_ids(ctx)
    skipped = sum(outputs["skipped"].values())
    assert outputs["count"] + skipped >= naming_key(records, ARN.rsplit("/", 1)[1]), outputs
    for field in ("event_names", "principals", "source_ips"):
        assert all(len(k) <= 300 for k in outputs[field]), field  # journaled: kept small


def key_arn(clients: ClientFactory) -> str:
    return str(clients.client("kms").create_key()["KeyMetadata"]["Arn"])


@pytest.mark.parametrize("name", NAMES)
def test_collect_from_files(name: str, world: ClientFactory, tmp_path: Path) -> None:
    records = [good(), *payloads()[name]]
    (tmp_path / "trail.json.gz").write_bytes(trail_file(records))
    params = CollectParams(key=ARN, aliases=[ALIAS], source="files", path=str(tmp_path), since="7d")
    outputs, ctx = run_collect(world, params)
    assert_accounted(outputs, ctx, records)


@pytest.mark.parametrize("name", NAMES)
def test_collect_from_s3(name: str, world: ClientFactory) -> None:
    s3 = world.client("s3")
    bucket = f"trail-{NAMES.index(name)}"  # each payload's own trail bucket
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    records = [good(), *payloads()[name]]
    s3.put_object(
        Bucket=bucket,
        Key=f"AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/28/{ACCOUNT}_x.json.gz",
        Body=trail_file(records),
    )
    params = CollectParams(key=ARN, aliases=[ALIAS], source="s3", bucket=bucket, since="7d")
    outputs, ctx = run_collect(world, params)
    assert_accounted(outputs, ctx, records)


def _text(record: Record) -> str:
    """A record as the JSON text a service returns (a service can carry no invalid UTF-8)."""
    return as_bytes(record).decode("utf-8", "replace")


@pytest.mark.parametrize("name", NAMES)
def test_collect_from_lookup(name: str, world: ClientFactory, world_key: str) -> None:
    arn = world_key
    records = [good(arn), *payloads(arn)[name]]
    items = [{"EventId": f"e{n}", "CloudTrailEvent": _text(r)} for n, r in enumerate(records)]
    ctx, _ = context(world)
    ctx.now = lambda: NOW
    trail = world.client("cloudtrail")
    with Stubber(trail) as stub:
        stub.add_response("lookup_events", {"Events": items})  # by key ARN
        stub.add_response("lookup_events", {"Events": items})  # by key id: the same events
        for _ in TRAIL_EVENTS:  # by name, CloudTrail's own events that can hide KMS's
            stub.add_response("lookup_events", {"Events": []})
        collected = Collect().run(ctx, CollectParams(key=arn, aliases=[ALIAS], since="7d"))
        stub.assert_no_pending_responses()
    outputs = collected.outputs
    json.dumps(outputs, ensure_ascii=False).encode()
    assert "good-1" in collected_ids(ctx)
    assert outputs["count"] + sum(outputs["skipped"].values()) >= naming_key(
        records, arn.rsplit("/", 1)[1]
    ), outputs
    found = Findings().run(ctx, FindingsParams(events="test", key=arn))
    json.dumps(found.outputs, ensure_ascii=False).encode()


def test_collect_from_the_sandbox_history(moto_clients: ClientFactory) -> None:
    """LookupEvents as the sandbox serves it, with every text payload and the big ones."""
    from kmsir.sandbox import lookup

    lookup.install()
    arn = key_arn(moto_clients)
    account = arn.split(":")[4]
    served = [good(arn)]
    for n, text in enumerate(TEXTS.values()):
        for m, record in enumerate(text_payload(text, arn)):
            assert isinstance(record, dict)
            served.append({**record, "eventID": f"text-{n}-{m}"})
    served += [structural(arn)[k][0] for k in ("user-agent-1mb", "resources-100k")]
    long_arn = f"arn:aws:sts::{OUTSIDE}:assumed-role/intruder/PWNED" + "R" * 1_000_000
    served.append(base(50, arn, eventID="long-arn", userIdentity={"arn": long_arn}))
    # the sandbox serves the last 90 days before the real clock
    recent = datetime.now(timezone.utc) - timedelta(days=1)
    served = [
        {**e, "eventTime": (recent + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for n, e in enumerate(served)
    ]
    lookup.add_events(account, "eu-west-1", served)  # type: ignore[arg-type]
    ctx, _ = context(moto_clients)
    outputs = Collect().run(ctx, CollectParams(key=arn, since="7d")).outputs
    assert outputs["count"] == len(served) and not outputs["skipped"]
    assert all(len(k) <= 300 for k in outputs["principals"])
    found = Findings().run(ctx, FindingsParams(events="test", key=arn)).outputs
    assert found["count"] >= len(TEXTS)  # each DisableKey is a finding


def athena_rows(records: list[Record]) -> list[dict[str, Any]]:
    """Each record as a row of the standard Athena CloudTrail table (JSON columns as text);
    a record that is no event puts its text in the request parameters of an ordinary row."""
    columns = {
        "eventid": "eventID",
        "eventtime": "eventTime",
        "eventname": "eventName",
        "useragent": "userAgent",
        "sourceipaddress": "sourceIPAddress",
        "errorcode": "errorCode",
        "recipientaccountid": "recipientAccountId",
        "requestparameters": "requestParameters",
        "useridentity": "userIdentity",
        "resources": "resources",
    }
    json_columns = ("requestparameters", "useridentity", "resources")

    def cell(value: Any, as_json: bool) -> dict[str, str]:
        if value is None:
            return {}
        return {
            "VarCharValue": json.dumps(value) if as_json or not isinstance(value, str) else value
        }

    rows = [{"Data": [{"VarCharValue": c} for c in columns]}]
    for n, record in enumerate(records):
        event = record
        if isinstance(record, bytes):
            event = base(40 + n, eventID=f"row-{n}")
        assert isinstance(event, dict)
        data = [cell(event.get(f), c in json_columns) for c, f in columns.items()]
        if isinstance(record, bytes):
            data[list(columns).index("requestparameters")] = {"VarCharValue": _text(record)}
        rows.append({"Data": data})
    return rows


@pytest.mark.parametrize("name", NAMES)
def test_collect_from_athena(name: str, world: ClientFactory) -> None:
    from moto.athena.models import QueryResults, athena_backends

    records = [good(), *payloads()[name]]
    rows = athena_rows(records)
    queue = athena_backends["123456789012"]["eu-west-1"].query_results_queue
    queue.clear()  # the world is shared: only this case's results are waiting
    queue.append(
        QueryResults(
            rows=rows,
            column_info=[{"Name": c["VarCharValue"], "Type": "varchar"} for c in rows[0]["Data"]],
        )
    )
    params = CollectParams(
        key=ARN, aliases=[ALIAS], source="athena", database="d", table="t", since="7d"
    )
    outputs, ctx = run_collect(world, params)
    assert "good-1" in collected_ids(ctx)
    naming = sum(1 for row in rows[1:] if KEY in json.dumps(row))
    assert outputs["count"] + sum(outputs["skipped"].values()) >= naming, outputs


@pytest.mark.parametrize("name", NAMES)
def test_collect_from_lake(
    name: str, world: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kmsir.actions.trail_query as tq

    monkeypatch.setattr(tq, "POLL_CAP", 0.0)
    records = [good(), *payloads()[name]]
    store = "arn:aws:cloudtrail:eu-west-1:111122223333:eventdatastore/abcd-1234"
    query = "0123456789abcdef0123456789abcdef0123"
    ctx, _ = context(world)
    ctx.now = lambda: NOW
    client = world.client("cloudtrail")
    with Stubber(client) as stub:
        stub.add_response("start_query", {"QueryId": query})
        stub.add_response("describe_query", {"QueryId": query, "QueryStatus": "FINISHED"})
        stub.add_response(
            "get_query_results",
            {"QueryResultRows": [[{"eventJson": _text(r)}] for r in records]},
        )
        params = CollectParams(
            key=ARN, aliases=[ALIAS], source="lake", event_data_store=store, since="7d"
        )
        outputs = Collect().run(ctx, params).outputs
        stub.assert_no_pending_responses()
    json.dumps(outputs, ensure_ascii=False).encode()
    assert "good-1" in collected_ids(ctx)
    assert outputs["count"] + sum(outputs["skipped"].values()) >= naming_key(records), outputs
    found = Findings().run(ctx, FindingsParams(events="test", key=ARN))
    json.dumps(found.outputs, ensure_ascii=False).encode()


def decoded(records: list[Record]) -> Iterator[dict[str, Any]]:
    """The records a JSON parser makes objects of (as any source hands them on)."""
    for record in records:
        if isinstance(record, dict):
            yield record
            continue
        try:
            value = json.loads(record)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            yield value


def test_findings_step_keeps_events_whose_time_is_no_time(moto_clients: ClientFactory) -> None:
    """An event whose time cannot be read cannot be shown to be too old for the baseline."""
    ctx, _ = context(moto_clients)
    ctx.now = lambda: NOW
    events = [base(1, eventTime=1764237600), base(2, eventTime="noon"), base(3, eventTime=None)]
    lines = b"".join(_raw(e) + b"\n" for e in events)
    ctx.artifacts.files["events.jsonl.gz"] = gzip.compress(lines)  # type: ignore[attr-defined]
    found = Findings().run(ctx, FindingsParams(events="collect", key=ARN)).outputs
    assert found["by_severity"] == {"high": 3}  # each DisableKey


@pytest.mark.parametrize("name", NAMES)
def test_findings_rules_take_any_event(name: str) -> None:
    events = [good(), *decoded(payloads()[name])]
    ctx = Context(key_account=ACCOUNT, window_start=datetime(2026, 11, 27, 12, tzinfo=timezone.utc))
    found = findings(events, ctx)
    for finding in found:
        assert len(finding.why) <= 2_000 and len(finding.principal) <= 1_000
        json.dumps(finding.to_json())


# -- (d) the report ---------------------------------------------------------------------------


PLAYBOOK = """\
id: hostile
title: Collect hostile trail logs
steps:
  - id: collect
    action: cloudtrail.collect
    with: {{key: "{arn}", source: files, path: "{logs}",
           since: 2026-11-01T00:00:00Z, until: 2026-11-29T00:00:00Z}}
  - id: findings
    action: cloudtrail.findings
    # a window reaching back past the events whenever the test runs: every one is a finding
    with: {{events: collect, window: 3650d, key: "{arn}"}}
"""


def hostile_bundle(moto_clients: ClientFactory, where: Path, records: list[Record]) -> Path:
    logs = where / "logs"
    logs.mkdir()
    (logs / "trail.json.gz").write_bytes(trail_file(records))
    book = where / "hostile.yaml"
    book.write_text(PLAYBOOK.format(arn=ARN, logs=logs))
    result = run_playbook(load_playbook(book), moto_clients, where / "ev", mode="live")
    assert result.status == "succeeded", result.error
    return result.bundle


def every_record() -> list[Record]:
    """Every payload in one trail file, with event ids that stay apart."""
    records: list[Record] = [good()]
    for n, (name, batch) in enumerate(payloads().items()):
        for m, record in enumerate(batch):
            keeps_id = name == "duplicate-event-id" or not isinstance(record, dict)
            if not keeps_id and isinstance(record.get("eventID"), str):  # type: ignore[union-attr]
                record = {**record, "eventID": f"p{n}-{m}"}  # type: ignore[dict-item]
            records.append(record)
    return records


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both reports of a run that collected every payload."""
    import boto3
    from moto import mock_aws

    where = tmp_path_factory.mktemp("hostile")
    with mock_aws():
        clients = ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1"), region="eu-west-1"
        )
        bundle = hostile_bundle(clients, where, every_record())
    texts = {}
    for fmt in ("md", "html"):
        out = where / f"report.{fmt}"
        ran = cli("report", bundle, "--format", fmt, "--out", out)
        assert_clean_cli(ran)
        texts[fmt] = out.read_text()
    texts["bundle"] = str(bundle)
    return texts


def test_report_counts_what_it_could_not_read(reports: dict[str, str]) -> None:
    context_ = report.build_context(Bundle.open(Path(reports["bundle"])))
    skipped = context_["trail"]["skipped"]
    assert sum(skipped.values()) >= 5, skipped  # not objects, too deep, bad UTF-8...
    assert any("nested" in reason for reason in skipped)
    for fmt in ("md", "html"):  # and both reports say so: nothing dropped silently
        assert "Not among these events (could not be read): " in reports[fmt]
        assert "nested" in reports[fmt].split("Not among these events", 1)[1][:2000]


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_text_is_inert_and_bounded(fmt: str, reports: dict[str, str]) -> None:
    text = reports[fmt]
    assert_inert(text)
    assert "\\x1b[2J" in text and "\\u202e" in text  # shown, not obeyed
    assert len(text) < 1_000_000  # a 1 MB user agent, 100,000 resources and grant tokens


def _template_markup() -> tuple[set[str], set[str]]:
    source = (REPO / "templates" / "report.html.j2").read_text()
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", source))
    attributes = set(re.findall(r"\s([a-zA-Z][\w-]*)=\"", source))
    return tags, attributes


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def test_html_report_has_no_markup_of_the_attackers(reports: dict[str, str]) -> None:
    page = reports["html"]
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=" in page  # shown as text
    tags, attributes = _template_markup()
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.found:
        assert tag in {t.lower() for t in tags}, tag
        for attribute, value in attrs:
            assert attribute in {a.lower() for a in attributes}, attribute
            assert "PWNED" not in (value or "") and "javascript:" not in (value or "")


def test_markdown_report_renders_no_markup_of_the_attackers(reports: dict[str, str]) -> None:
    text = reports["md"]
    assert "PWNED" in text
    page = rendered_with_whole_tables(text)
    for markup in ("<a ", "<script", "<img", "<svg", "<del>", "<ol"):
        assert markup not in page, markup
    assert page.count("<hr") == len(re.findall(r"^---$", text, flags=re.M))  # the template's
    # attacker text is in paragraphs, cells and code, never an element of its own
    for element in ("h1", "h2", "h3", "h4", "blockquote", "li", "strong", "em"):
        for inner in re.findall(rf"<{element}>(.*?)</{element}>", page, flags=re.S):
            outside_code = re.sub(r"<code>.*?</code>", "", inner, flags=re.S)
            assert "PWNED" not in outside_code, (element, inner[:200])


def test_a_megabyte_user_agent_in_a_thousand_events_keeps_the_report_small(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    bundle = hostile_bundle(moto_clients, tmp_path, [good(), base(1)])
    events = next(bundle.glob("artifacts/*-collect/events.jsonl.gz"))
    agent = "PWNED" + "A" * 1_000_000
    with gzip.open(events, "wb", compresslevel=1) as out:
        for n in range(1_000):
            out.write(
                _raw(
                    base(
                        n,
                        userAgent=agent,
                        eventID=f"big-{n}",
                        eventTime=f"2026-11-28T{n // 60 % 24:02d}:{n % 60:02d}:00Z",
                    )
                )
                + b"\n"
            )
    findings_file = next(bundle.glob("artifacts/*-findings/findings.json"))
    found = json.loads(findings_file.read_text())
    # the report shows three events of each of the 50 most severe findings: 150 of them
    found = [
        {**found[0], "id": f"f-{n}", "event_ids": [f"big-{n * 3 + i}" for i in range(3)]}
        for n in range(300)
    ]
    findings_file.write_text(json.dumps(found))
    tracemalloc.start()
    try:
        page = report.render(bundle, fmt="html")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB to render 1 GB of user agents"
    assert "PWNED" in page and len(page) < 1_000_000


def test_an_unterminated_string_is_one_token_so_splitting_stays_linear() -> None:
    """An open string full of escaped quotes once made the splitter retry from every quote
    (a 160 KB file took a minute): it now runs to the end of the input as one token."""
    from kmsir.trail.files import _TOKENS, scan_blob

    tokens = [t.group() for t in _TOKENS.finditer(b'{"a":"x\\"y\\"z')]
    assert tokens == [b"{", b'"a"', b":", b'"x\\"y\\"z']
    newline_escape = [t.group() for t in _TOKENS.finditer(b'["a\\\nb", 1]')]
    assert newline_escape == [b"[", b'"a\\\nb"', b",", b"]"]
    hostile = b'{"Records":[{"eventVersion":"1","x":"' + b'\\"' * 200_000
    records, stats = scan_blob(hostile, "cut.json", KeyMatcher.for_key(ARN, []), None, None)
    assert records == [] and stats.skipped == {"file ends inside a record (cut short)": 1}


def test_a_record_repeating_the_key_is_matched_once() -> None:
    from kmsir.trail.files import _fast_matches

    key = KEY.encode()
    record = (
        b'{"eventVersion":"1.08","eventTime":"2026-11-27T01:00:00Z","eventName":"Decrypt",'
        b'"userAgent":"' + key * 20_000 + b'","resources":[{"ARN":"' + ARN.encode() + b'"}]}'
    )
    other = b'{"eventVersion":"1.08","eventName":"Encrypt"}'
    data = b'{"Records":[' + record + b"," + other + b"]}"
    assert _fast_matches(data, (key,)) == [record]
