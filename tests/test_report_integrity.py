"""Trail log integrity in the findings and the report, from a collect step's
``trail-integrity.json``.

Each bundle here is a real run (a ``files`` collect of one trail log, then findings) whose
collect step also writes a ``trail-integrity.json`` given by the test, in the artifact's
version 1 schema: what the findings step and the report make of each answer is what is
tested, not the check that produced it (``test_trail_integrity.py``). File names in that
artifact come from a trail bucket: an attacker who can write there chooses them.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from kmsir import actions, inert, report
from kmsir.actions.base import ActionContext, Outcome
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.aws import ClientFactory
from kmsir.evidence.manifest import Bundle
from kmsir.trail import finding_integrity

from .conftest import load_playbook, run_playbook
from .test_report import rendered_with_whole_tables
from .test_report_posture import balanced, section

ACCOUNT = "111122223333"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{KEY}"
PREFIX = f"s3://trail-bucket/AWSLogs/{ACCOUNT}/CloudTrail/eu-west-1/2026/11/20"
DIGEST = f"{ACCOUNT}_CloudTrail-Digest_eu-west-1_main_eu-west-1_20261120T110000Z.json.gz"
MISSING_DIGEST = f"{ACCOUNT}_CloudTrail-Digest_eu-west-1_main_eu-west-1_20261120T120000Z.json.gz"
FINGERPRINT = "8eba5d7c1ed7a9d5a8cbbb1a8f3e2d10"
GOOD_SHA, BAD_SHA = "a" * 64, "b" * 64


def log_name(hour: int, unique: str) -> str:
    return f"{ACCOUNT}_CloudTrail_eu-west-1_20261120T{hour:02d}05Z_{unique}.json.gz"


def file(
    name: str, verdict: str, *, detail: str = "", sha: str | None = GOOD_SHA
) -> dict[str, Any]:
    return {
        "location": f"{PREFIX}/{name}",
        "name": name,
        "verdict": verdict,
        "sha256": sha,
        "expected": GOOD_SHA if verdict in ("validated", "hash mismatch") else None,
        "digest": DIGEST if verdict != "not covered" else None,
        "detail": detail,
        "kept": f"trail-logs/{name}" if verdict == "validated" else None,
    }


def digest(name: str, status: str, *, detail: str = "", hour: int = 10) -> dict[str, Any]:
    """A digest entry covering ``hour`` to the next hour."""
    return {
        "location": f"s3://trail-bucket/AWSLogs/{ACCOUNT}/CloudTrail-Digest/eu-west-1/{name}",
        "name": name,
        "status": status,
        "start": f"2026-11-20T{hour:02d}:00:00Z",
        "end": f"2026-11-20T{hour + 1:02d}:00:00Z",
        "fingerprint": FINGERPRINT,
        "region": "eu-west-1",
        "detail": detail,
        "signature": "00ff" * 64 if status == "valid" else None,
        "saved": f"trail-digests/{name}" if status != "missing" else None,
    }


def artifact(files: list[dict[str, Any]], digests: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``trail-integrity.json`` (version 1) holding ``files`` and ``digests``."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
    tampering = any(f["verdict"] in finding_integrity.TAMPERING for f in files) or any(
        d["status"] in ("missing", "signature invalid", "unreadable", "chain broken")
        for d in digests
    )
    return {
        "version": 1,
        "source": "s3://trail-bucket/AWSLogs/",
        "window": {"since": "2026-11-19T00:00:00Z", "until": "2026-11-21T00:00:00Z"},
        "days": [[ACCOUNT, "eu-west-1", "2026/11/20"]],
        "tampering": tampering,
        "counts": counts,
        "digest_counts": {},
        "files": files,
        "digests": digests,
        "public_keys": [
            {
                "fingerprint": FINGERPRINT,
                "value": "TUlJQkNnS0NBUUVB",
                "region": "eu-west-1",
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_until": "2027-01-01T00:00:00Z",
            }
        ],
    }


#: The deleted log file: the hour that held the attacker's CreateGrant.
DELETED = log_name(10, "GrantHourDeleted0")
ALTERED = log_name(10, "OneByteAltered00")
UNCOVERED = log_name(11, "AfterLastDigest0")


def tampered() -> dict[str, Any]:
    """One log file deleted, one altered, one not covered, one digest missing."""
    return artifact(
        [
            file(log_name(9, "Fine000000000001"), "validated"),
            file(log_name(9, "Fine000000000002"), "validated"),
            file(DELETED, "deleted", detail="listed in a digest, not in the bucket", sha=None),
            file(ALTERED, "hash mismatch", sha=BAD_SHA),
            file(UNCOVERED, "not covered", detail="no digest covers it yet"),
        ],
        [
            digest(DIGEST, "valid"),
            digest(MISSING_DIGEST, "missing", detail="named by the next digest, absent", hour=11),
        ],
    )


def intact() -> dict[str, Any]:
    return artifact(
        [file(log_name(h, f"Fine{h:012d}"), "validated") for h in range(9, 12)],
        [digest(DIGEST, "valid")],
    )


class HandChecked(Collect):
    """``cloudtrail.collect`` whose integrity answer is the test's: the collect's own check
    is off, and ``data`` is written as its ``trail-integrity.json`` (nothing when None)."""

    outputs = MappingProxyType({**Collect.outputs, "integrity": "dict|null"})

    def __init__(self, data: bytes | None) -> None:
        self.data = data

    def run(self, ctx: ActionContext, params: CollectParams) -> Outcome:
        if "check_digests" in type(params).model_fields:  # the answer is written below
            params = params.model_copy(update={"check_digests": False})
        done = super().run(ctx, params)
        if self.data is None:
            return done
        path = ctx.artifacts.write(finding_integrity.INTEGRITY_NAME, self.data)
        outputs = {**done.outputs, "integrity": {"artifact": path}}
        return Outcome(outputs=outputs, summary=done.summary)


PLAYBOOK = """\
id: trail-check
title: Collect trail logs
steps:
  - id: collect
    action: cloudtrail.collect
    with: {{key: "{arn}", source: files, path: "{logs}",
           since: 2026-11-01T00:00:00Z, until: 2026-11-29T00:00:00Z}}
  - id: findings
    action: cloudtrail.findings
    with: {{events: collect, window: 3650d, key: "{arn}"}}
"""


def event(n: int, name: str) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "eventID": f"ev-{n}",
        "eventTime": f"2026-11-20T09:{n:02d}:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "10.0.0.1",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/app/i-1",
            "accountId": ACCOUNT,
        },
        "requestParameters": {"keyId": ARN},
        "resources": [{"type": "AWS::KMS::Key", "ARN": ARN}],
        "recipientAccountId": ACCOUNT,
    }


@pytest.fixture
def bundle_of(moto_clients: ClientFactory, tmp_path: Path) -> Any:
    """A run whose collect writes the given ``trail-integrity.json`` (bytes, a document, or
    None for none at all): its bundle."""
    runs = iter(range(100))

    def make(data: bytes | dict[str, Any] | None) -> Path:
        where = tmp_path / f"run{next(runs)}"
        logs = where / "logs"
        logs.mkdir(parents=True)
        records = {"Records": [event(1, "Decrypt"), event(2, "Decrypt")]}
        (logs / log_name(9, "Fine000000000001")).write_bytes(
            gzip.compress(json.dumps(records).encode(), mtime=0)
        )
        book = where / "integrity.yaml"
        book.write_text(PLAYBOOK.format(arn=ARN, logs=logs))
        raw = json.dumps(data).encode() if isinstance(data, dict) else data
        registry = {**dict(actions.registry()), "cloudtrail.collect": HandChecked(raw)}
        result = run_playbook(
            load_playbook(book), moto_clients, where / "ev", mode="live", registry=registry
        )
        assert result.status == "succeeded", result.error
        return result.bundle

    return make


def findings_of(bundle: Path) -> list[dict[str, Any]]:
    (path,) = (bundle / "artifacts").glob("*-findings/findings.json")
    found: list[dict[str, Any]] = json.loads(path.read_text())
    return found


def test_tampering_is_one_critical_finding_naming_what_failed(bundle_of: Any) -> None:
    bundle = bundle_of(tampered())

    found = findings_of(bundle)
    first = found[0]
    assert (first["severity"], first["title"]) == ("critical", "Trail log tampering")
    assert sum(1 for f in found if f["title"] == "Trail log tampering") == 1
    assert "1 hash mismatch, 1 deleted of 5 log file(s)" in first["why"]
    assert DELETED in first["why"] and ALTERED in first["why"]
    assert UNCOVERED not in first["why"]  # unproven, no failure
    assert "1 missing" in first["why"]  # the digest deleted from the chain
    assert first["event_time"] == "2026-11-20T10:05:00Z"  # the hour the trail lost
    assert [f["name"] for f in first["details"]["files"]] == [DELETED, ALTERED]
    assert first["details"]["artifact"].endswith("-collect/trail-integrity.json")

    text = report.render(bundle, fmt="md")
    shown = section(text, "## CloudTrail findings", "## Actions taken")
    assert "### CRITICAL: Trail log tampering" in shown
    assert "- Best practice: CloudTrail log file integrity validation on every trail" in shown


def test_the_report_lists_every_failure_the_unproven_apart_and_the_keys(
    bundle_of: Any,
) -> None:
    bundle = bundle_of(tampered())
    text = report.render(bundle, fmt="md")

    trail = section(text, "## CloudTrail\n", "## Timeline")
    assert (
        "Trail log integrity: 2 validated, 1 hash mismatch, 1 deleted, 1 not covered: "
        "**tampering**" in trail
    )
    part = section(text, "### Trail log integrity\n\n", "\n---\n")  # a heading, a blank line
    assert (
        "Step `collect` checked the trail log files it read from `s3://trail-bucket/AWSLogs/`"
        in part
    )
    assert "Digest files: 1 valid, 1 missing." in part
    assert "**Tampering: the trail was changed after CloudTrail wrote it.**" in part
    rows = [line for line in part.splitlines() if line.startswith("| **")]
    assert rows[0].startswith(f"| **deleted** | `{PREFIX}/{DELETED}` | `{DIGEST}` |")
    assert rows[1].startswith(f"| **hash mismatch** | `{PREFIX}/{ALTERED}` |")
    assert f"| (sha256 `{BAD_SHA}`, the digest lists `{GOOD_SHA}`)" in rows[1]
    assert rows[2].startswith(f"| **missing** | `s3://trail-bucket/AWSLogs/{ACCOUNT}/")
    assert "named by the next digest, absent" in rows[2]
    assert len(rows) == 3  # failures only: the validated and the unproven are not rows here
    unproven = section(part, "Unproven (neither validated nor failed):", "Public keys")
    assert (
        f"| log file not covered | `{PREFIX}/{UNCOVERED}` | no digest covers it yet |" in unproven
    )
    assert (
        f"Public keys the signatures were checked with: `{FINGERPRINT}` (eu-west-1, valid from "
        "2026-01-01T00:00:00Z to 2027-01-01T00:00:00Z)." in part
    )
    assert "1 digest file(s) and 2 log file(s) holding matched events" in part
    assert "Re-check offline: `kmsir cloudtrail verify-logs <bundle>`." in part
    rendered_with_whole_tables(text)

    page = report.render(bundle, fmt="html")
    balanced(page)
    html_part = section(page, '<h3 id="trail-integrity-1">Trail log integrity</h3>', "</body>")
    assert '<span class="sev sev-critical">tampering</span>' in html_part
    assert f"<td><strong>deleted</strong></td><td><code>{PREFIX}/{DELETED}</code></td>" in html_part
    assert f"<td>log file not covered</td><td><code>{PREFIX}/{UNCOVERED}</code></td>" in html_part
    assert f"<code>{FINGERPRINT}</code>" in html_part
    assert "<code>kmsir cloudtrail verify-logs &lt;bundle&gt;</code>" in html_part
    assert 'href="#trail-integrity-1"' in section(page, "<h2>CloudTrail</h2>", "<h2>Timeline")


def test_a_trail_proven_intact_is_no_finding_and_says_so(bundle_of: Any) -> None:
    bundle = bundle_of(intact())

    assert all(f["title"] != "Trail log tampering" for f in findings_of(bundle))
    text = report.render(bundle, fmt="md")
    part = section(text, "### Trail log integrity", "\n---\n")
    assert "against 1 CloudTrail digest file(s): 3 validated. Digest files: 1 valid." in part
    assert "Every log file read was proven unaltered by a signed, chained digest." in part
    assert "Tampering" not in part and "Unproven" not in part and "| **" not in part
    assert "Trail log integrity: 3 validated (see" in section(
        text, "## CloudTrail\n", "## Timeline"
    )
    page = report.render(bundle, fmt="html")
    assert 'class="sev sev-critical"' not in page
    balanced(page)


def test_unproven_files_alone_are_listed_capped_never_as_failures(bundle_of: Any) -> None:
    files = [file(log_name(9, "Fine000000000001"), "validated")]
    files += [file(log_name(h % 24, f"Uncovered{h:07d}"), "not covered") for h in range(25)]
    unsigned = digest(DIGEST, "signature unavailable", detail="no signature in the local copy")
    bundle = bundle_of(artifact(files, [unsigned]))

    assert all(f["severity"] != "critical" for f in findings_of(bundle))
    text = report.render(bundle, fmt="md")
    part = section(text, "### Trail log integrity", "\n---\n")
    assert "No log file failed its check. 25 could not be proven either way" in part
    unproven = section(part, "Unproven (neither validated nor failed), the first 21:", "Public")
    assert unproven.count("| log file not covered |") == 20
    assert "| digest signature unavailable |" in unproven
    assert "And 5 more unproven, in `artifacts/" in unproven
    assert "| **" not in part  # no failure rows
    assert "tampering" not in section(text, "## CloudTrail\n", "## Timeline")
    rendered_with_whole_tables(text)


#: A file name an attacker with write access to the trail bucket could give a log file:
#: Markdown (table cell end, code end, a link, raw HTML), terminal controls, a bidi override.
HOSTILE = (
    f"{ACCOUNT}_CloudTrail_eu-west-1_20261120T1005Z_x|`<script>alert(1)</script>"
    "[click](https://evil.example/)\x1b[2J\x1b]0;owned\x07\u202egnp.json.gz"
)
RAW = ("\x1b", "\x07", "\u202e")


def test_attacker_named_files_stay_inert_in_findings_and_both_reports(bundle_of: Any) -> None:
    bad = file(HOSTILE, "deleted", detail="| <b>bold</b> `x` \x1b[31m", sha=None)
    bundle = bundle_of(artifact([bad, file(log_name(9, "F1"), "validated")], []))

    text = report.render(bundle, fmt="md")
    assert not [c for c in RAW if c in text]
    assert "\\x1b[2J" in text and "\\u202e" in text  # shown, not obeyed
    assert "<b>" not in text  # the name is inline code, the detail text
    html = rendered_with_whole_tables(text)  # no cell broken by the name's pipe
    assert "<script>" not in html and 'href="https://evil' not in html
    # the finding quotes the name (cut), as text
    assert "\\<script\\>alert(1)\\</script\\>" in section(text, "### CRITICAL", "## Actions")

    page = report.render(bundle, fmt="html")
    assert not [c for c in RAW if c in page]
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = balanced(page)
    assert all(tag != "script" for tag, _ in parsed.tags)
    assert not any(
        tag == "a" and any(v and "evil" in v for _, v in attrs) for tag, attrs in parsed.tags
    )


def test_an_unreadable_artifact_is_said_and_counted_not_a_crash(bundle_of: Any) -> None:
    bundle = bundle_of(b"{not json")

    outputs = Bundle.open(bundle).view.steps["findings"].outputs
    assert any(
        r.startswith("trail-integrity.json unreadable: not JSON") for r in outputs["skipped"]
    )
    text = report.render(bundle, fmt="md")
    part = section(text, "### Trail log integrity", "\n---\n")
    assert "`artifacts/01-collect/trail-integrity.json` could not be read: not JSON" in part
    page = report.render(bundle, fmt="html")
    assert "could not be read: not JSON" in page
    balanced(page)


def test_a_bundle_without_the_artifact_reads_as_before(bundle_of: Any) -> None:
    """A bundle written before the check (the report snapshots are the byte-for-byte test)."""
    bundle = bundle_of(None)

    assert report.build_context(Bundle.open(bundle))["integrity"] == []
    assert all(f["title"] != "Trail log tampering" for f in findings_of(bundle))
    for fmt in ("md", "html"):
        text = report.render(bundle, fmt=fmt)
        assert "Trail log integrity" not in text and "verify-logs" not in text


def test_a_failing_digest_alone_is_tampering_and_named() -> None:
    """A chain whose only failure is a digest (the log files of its hour gone with it): the
    finding names the digest, as ``trail.integrity`` counts it tampering."""
    document = artifact(
        [file(log_name(9, "Fine000000000001"), "validated")],
        [digest(DIGEST, "valid"), digest(MISSING_DIGEST, "missing", detail="gone", hour=11)],
    )
    document["tampering"] = False  # even unsaid: the digest's status is enough
    found = finding_integrity.tampering_finding(read(document))
    assert found is not None and found.severity == "critical"
    assert found.why.startswith("CloudTrail log file validation found tampering (1 log file(s)")
    assert f"1 missing (first: {MISSING_DIGEST}: gone)" in found.why
    assert found.event_time == "2026-11-20T11:00:00Z"  # the missing digest's period
    assert not inert.has_hidden(found.why)
    # the same failures, the same finding: its id names them, not the run
    again = finding_integrity.tampering_finding(read(document))
    assert again is not None and again.id == found.id
    assert re.fullmatch(r"trail-log-tampering-[0-9a-f]{12}", found.id)

    assert finding_integrity.tampering_finding(read(intact())) is None
    said = {**intact(), "tampering": True}  # what the file says counts, listed or not
    assert finding_integrity.tampering_finding(read(said)) is not None


def read(document: dict[str, Any]) -> finding_integrity.Integrity:
    return finding_integrity.read(json.dumps(document).encode())
