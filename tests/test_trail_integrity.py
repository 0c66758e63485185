"""CloudTrail log file integrity: every verdict and digest status on a signed trail built by
``digestkit``, tampered the ways an attacker would (or a copy would lose its metadata).

AWS's validation rules followed here:
https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html
"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import (
    DigestFile,
    LogFile,
    Result,
    check,
    log_day,
)
from tests import digestkit
from tests.digestkit import ACCOUNT, REGION, START


def verdicts(result: Result) -> dict[str, str]:
    return {f.name: f.verdict for f in result.files}


def statuses(result: Result) -> dict[str, str]:
    return {d.name: d.status for d in result.digests}


def details(result: Result, name: str) -> str:
    found: list[str] = [f.detail for f in result.files if f.name == name]
    found += [d.detail for d in result.digests if d.name == name]
    (detail,) = found
    return detail


def test_an_intact_trail_is_proven_file_by_file() -> None:
    trail = digestkit.build(hours=3, logs_per_hour=2)
    result = trail.check()
    assert result.counts() == {"validated": 6}
    assert result.digest_counts() == {"valid": 3}
    assert not result.tampering
    assert result.problem_lines() == []
    assert result.summary().endswith("every log file proven intact")
    first = result.files[0]
    assert first.sha256 == first.expected and first.digest == trail.digest_name(0)
    assert first.location.startswith(f"s3://{digestkit.BUCKET}/AWSLogs/{ACCOUNT}/CloudTrail/")


def test_one_byte_altered_in_a_log_file_is_a_hash_mismatch() -> None:
    trail = digestkit.build()
    altered = trail.log_names(1)[0]
    trail.alter_log(altered)
    result = trail.check()
    assert verdicts(result)[altered] == "hash mismatch"
    assert result.counts() == {"validated": 5, "hash mismatch": 1}
    assert result.digest_counts() == {"valid": 3}
    assert result.tampering
    assert "TAMPERING" in result.summary()
    (line,) = result.problem_lines()
    assert line.startswith("log file hash mismatch: s3://") and altered in line


def test_an_unreadable_log_file_a_digest_lists_is_a_hash_mismatch() -> None:
    trail = digestkit.build(hours=1)
    name = trail.log_names(0)[0]
    trail.logs[name].body = trail.logs[name].body[:20]  # truncated gzip
    result = trail.check()
    assert verdicts(result)[name] == "hash mismatch"
    assert "unreadable" in details(result, name)


def test_a_deleted_log_file_is_reported_where_its_digest_put_it() -> None:
    trail = digestkit.build()
    deleted = trail.log_names(1)[1]
    key = trail.logs[deleted].key
    expected = fmt.log_hash(gzip.decompress(trail.logs[deleted].body))
    trail.delete_log(deleted)
    result = trail.check()
    (verdict,) = [f for f in result.files if f.name == deleted]
    assert (verdict.verdict, verdict.location) == ("deleted", f"s3://{digestkit.BUCKET}/{key}")
    assert (verdict.sha256, verdict.expected, verdict.digest) == (
        None,
        expected,
        trail.digest_name(1),
    )
    assert result.counts() == {"validated": 5, "deleted": 1}
    assert result.tampering


def test_a_log_file_of_a_day_not_read_is_not_called_deleted() -> None:
    trail = digestkit.build(hours=4, start=START.replace(hour=22))  # 22:00 to 02:00
    today = {(ACCOUNT, REGION, "2026/11/21")}
    read_today = [log for log in trail.log_files() if "/2026/11/21/" in log.location]
    digests_today = [d for d in trail.digest_files() if "/2026/11/21/" in d.location]
    result = check(read_today, digests_today, trail.public_keys(), days=today)
    # the 00:00 digest (on the 21st) lists the 23:xx log files (the 20th's folder): unread,
    # not deleted; it names the 23:00 digest (the 20th's folder) as previous: not missing
    assert result.counts() == {"validated": 4}
    assert result.digest_counts() == {"valid": 3}
    assert not result.tampering


def test_a_digest_deleted_from_the_middle_of_the_chain_is_missing() -> None:
    trail = digestkit.build(hours=3)
    gone = trail.digest_name(1)
    trail.delete_digest(gone)
    result = trail.check()
    assert statuses(result) == {
        trail.digest_name(0): "valid",
        gone: "missing",
        trail.digest_name(2): "valid",
    }
    (missing,) = [d for d in result.digests if d.status == "missing"]
    assert missing.location.endswith(f"/CloudTrail-Digest/{REGION}/2026/11/20/{gone}")
    assert trail.digest_name(2) in missing.detail
    assert {verdicts(result)[n] for n in trail.log_names(1)} == {"digest missing"}
    assert result.counts() == {"validated": 4, "digest missing": 2}
    assert result.tampering


def test_a_digest_missing_with_its_log_files_still_proves_tampering() -> None:
    trail = digestkit.build(hours=3)
    for name in trail.log_names(1):
        trail.delete_log(name)
    trail.delete_digest(trail.digest_name(1))
    result = trail.check()
    assert result.counts() == {"validated": 4}
    assert result.digest_counts() == {"valid": 2, "missing": 1}
    assert result.tampering
    assert result.problem_lines()[0].startswith("digest missing: s3://")


def test_a_digest_signed_with_another_key_has_an_invalid_signature() -> None:
    trail = digestkit.build(hours=3)
    forged = trail.digest_name(1)
    trail.resign(forged, "attacker")
    result = trail.check()
    assert statuses(result)[forged] == "signature invalid"
    assert "does not verify" in details(result, forged)
    assert {verdicts(result)[n] for n in trail.log_names(1)} == {"digest signature invalid"}
    assert result.counts() == {"validated": 4, "digest signature invalid": 2}
    assert result.tampering


def test_a_link_recording_another_signature_breaks_the_chain() -> None:
    """The newest digest (no metadata: unproven) names the previous one with its hash but
    another signature: the chain does not hold together."""
    trail = digestkit.build(hours=2)
    newest = trail.digest_name(1)
    trail.replace_digest(newest, lambda d: d.update(previousDigestSignature="00" * 256))
    trail.unsign(newest)
    result = trail.check()
    assert statuses(result) == {
        trail.digest_name(0): "chain broken",
        newest: "signature unavailable",
    }
    assert "records another signature" in details(result, trail.digest_name(0))
    assert result.tampering


def test_a_digest_replaced_by_a_correctly_signed_one_breaks_the_chain() -> None:
    trail = digestkit.build(hours=3)
    replaced = trail.digest_name(1)
    hidden = trail.log_names(1)[0]

    def hide(digest: dict[str, Any]) -> None:
        digest["logFiles"] = [e for e in digest["logFiles"] if not e["s3Object"].endswith(hidden)]

    trail.replace_digest(replaced, hide)
    trail.delete_log(hidden)
    result = trail.check()
    assert statuses(result) == {
        trail.digest_name(0): "valid",
        replaced: "chain broken",
        trail.digest_name(2): "valid",
    }
    assert details(result, replaced) == f"{trail.digest_name(2)} records another SHA-256 for it"
    assert verdicts(result)[trail.log_names(1)[1]] == "chain broken"
    assert hidden not in verdicts(result)  # no digest that can be trusted lists it
    assert result.tampering


def test_a_digest_the_chain_passes_by_breaks_the_chain() -> None:
    trail = digestkit.build(hours=2)
    first = trail.digest(trail.digest_name(0))
    end = START + timedelta(minutes=90)  # between the two digests
    key = fmt.digest_key(ACCOUNT, REGION, digestkit.TRAIL, REGION, end)
    first.update(digestEndTime=fmt.iso(end), digestS3Object=key, logFiles=[])
    uncompressed, gz = fmt.encode(first)
    inserted = DigestFile(
        f"s3://{digestkit.BUCKET}/{key}", gz, fmt.sign(digestkit.private_key(), first, uncompressed)
    )
    digests = [*trail.digest_files(), inserted]
    result = check(trail.log_files(), digests, trail.public_keys(), days=trail.days())
    assert statuses(result)[inserted.name] == "chain broken"
    assert "passes from" in details(result, inserted.name)
    assert result.digest_counts() == {"valid": 2, "chain broken": 1}


def test_a_new_chain_after_logging_stopped_is_no_gap_to_report() -> None:
    before = digestkit.build(hours=2)
    after = digestkit.build(hours=2, start=START + timedelta(hours=5))  # starts with null
    result = check(
        before.log_files() + after.log_files(),
        before.digest_files() + after.digest_files(),
        before.public_keys(),
        days=before.days() | after.days(),
    )
    assert result.counts() == {"validated": 8}
    assert result.digest_counts() == {"valid": 4}


def test_a_log_file_no_digest_lists_is_not_covered_and_no_failure() -> None:
    trail = digestkit.build(hours=2)
    late = START + timedelta(hours=2, minutes=10)  # after the last digest
    name = f"{ACCOUNT}_CloudTrail_{REGION}_{late:%Y%m%dT%H%MZ}_late.json.gz"
    logs = [*trail.log_files(), LogFile(f"s3://{digestkit.BUCKET}/x/{name}", "ab" * 32)]
    result = check(logs, trail.digest_files(), trail.public_keys(), days=trail.days())
    assert verdicts(result)[name] == "not covered"
    assert result.counts() == {"validated": 4, "not covered": 1}
    assert not result.tampering
    assert "1 log file unproven" in result.summary()
    assert result.problem_lines() == [
        f"log file not covered: s3://{digestkit.BUCKET}/x/{name} (listed in no digest read)"
    ]


def test_a_local_copy_takes_each_signature_from_the_next_digest(tmp_path: Path) -> None:
    """``aws s3 sync`` loses S3 metadata: each digest is proven by the signature its
    successor records; the newest one has none (unproven, not a failure)."""
    trail = digestkit.build(hours=3)
    root = trail.write(tmp_path)
    logs = [
        LogFile(str(path), fmt.log_hash(gzip.decompress(path.read_bytes())))
        for path in sorted(root.rglob("*_CloudTrail_*.json.gz"))
    ]
    digests = [
        DigestFile(str(path), path.read_bytes(), None)
        for path in sorted(root.rglob("*_CloudTrail-Digest_*.json.gz"))
    ]
    result = check(logs, digests, trail.public_keys(), days=trail.days())
    assert statuses(result) == {
        trail.digest_name(0): "valid",
        trail.digest_name(1): "valid",
        trail.digest_name(2): "signature unavailable",
    }
    assert trail.digest_name(1) in details(result, trail.digest_name(0))
    assert {verdicts(result)[n] for n in trail.log_names(2)} == {"not covered"}
    assert "signature is unavailable (hash matches)" in details(result, trail.log_names(2)[0])
    assert result.counts() == {"validated": 4, "not covered": 2}
    assert not result.tampering
    assert result.files[0].location == str(root / trail.logs[trail.log_names(0)[0]].key)
    unproven = result.problem_lines()
    assert unproven[0].startswith("digest signature unavailable: ")


def test_a_local_copy_altered_fails_the_signature_its_successor_records() -> None:
    trail = digestkit.build(hours=3)
    trail.replace_digest(trail.digest_name(0), lambda d: d.update(logFiles=[]))
    result = trail.check(signed=False)
    assert statuses(result)[trail.digest_name(0)] == "chain broken"


def test_the_newest_digest_without_metadata_is_unproven_the_rest_valid() -> None:
    trail = digestkit.build(hours=3)
    trail.unsign(trail.digest_name(2))
    result = trail.check()
    assert result.digest_counts() == {"valid": 2, "signature unavailable": 1}
    assert result.counts() == {"validated": 4, "not covered": 2}
    assert not result.tampering


def test_an_unreadable_digest_is_reported_and_its_log_files_unproven() -> None:
    trail = digestkit.build(hours=3)
    broken = trail.digest_name(1)
    trail.digests[broken].body = gzip.compress(b'{"digestEndTime": "x"}')
    result = trail.check()
    assert statuses(result)[broken] == "unreadable"
    assert "lacks digestPublicKeyFingerprint" in details(result, broken)
    assert statuses(result)[trail.digest_name(0)] == "valid"
    assert {verdicts(result)[n] for n in trail.log_names(1)} == {"not covered"}
    assert result.tampering  # a digest CloudTrail wrote no longer reads


def test_without_public_keys_every_digest_says_why() -> None:
    trail = digestkit.build(hours=2)
    problem = "ListPublicKeys: AccessDenied"
    result = check(
        trail.log_files(), trail.digest_files(), [], days=trail.days(), keys_problem=problem
    )
    # keys that could not be had prove nothing either way: unproven, no alarm
    assert result.digest_counts() == {"signature unavailable": 2}
    assert {d.detail for d in result.digests} == {f"no public key to check it ({problem})"}
    assert result.counts() == {"not covered": 4}
    assert not result.tampering
    # ...but a log file its digest lists another content for is tampering all the same,
    # and so is one a digest lists that is gone
    trail.alter_log(trail.log_names(0)[0])
    trail.delete_log(trail.log_names(1)[0])
    result = check(
        trail.log_files(), trail.digest_files(), [], days=trail.days(), keys_problem=problem
    )
    assert verdicts(result)[trail.log_names(0)[0]] == "hash mismatch"
    assert "signature could not be checked" in details(result, trail.log_names(0)[0])
    assert result.counts()["deleted"] == 1 and result.tampering
    plain = check(trail.log_files(), trail.digest_files(), [], days=trail.days())
    assert "no public key (none has fingerprint" in plain.digests[0].detail


def test_a_digest_moved_from_where_it_was_written_has_an_invalid_signature() -> None:
    trail = digestkit.build(hours=1)
    (digest,) = trail.digest_files()
    moved = DigestFile(f"s3://elsewhere/{digest.name}", digest.gz, digest.signature)
    result = check(trail.log_files(), [moved], trail.public_keys(), days=trail.days())
    assert statuses(result)[moved.name] == "signature invalid"
    assert "moved from where it was written" in details(result, moved.name)


def test_problem_lines_list_failures_then_at_most_twenty_unproven() -> None:
    trail = digestkit.build(hours=1, logs_per_hour=2)
    trail.alter_log(trail.log_names(0)[0])
    extra = [
        LogFile(f"/copy/{ACCOUNT}_CloudTrail_{REGION}_20261121T0000Z_{n}.json.gz", None)
        for n in range(25)
    ]
    result = check(
        trail.log_files() + extra, trail.digest_files(), trail.public_keys(), days=trail.days()
    )
    lines = result.problem_lines()
    assert lines[0].startswith("log file hash mismatch: ")
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "... and 5 more unproven"


def test_the_result_reads_back_from_its_artifact() -> None:
    trail = digestkit.build(hours=3)
    trail.delete_log(trail.log_names(0)[0])
    trail.delete_digest(trail.digest_name(1))
    result = trail.check()
    document = json.loads(json.dumps(result.to_json()))
    assert document["version"] == 1 and document["tampering"] is True
    assert document["counts"] == {"validated": 3, "deleted": 1, "digest missing": 2}
    assert document["digest_counts"] == {"valid": 2, "missing": 1}
    assert set(document["files"][0]) == {
        *("location", "name", "verdict", "sha256", "expected", "digest", "detail")
    }
    # what the collect step adds is accepted
    document.update(source="files", window={"since": None, "until": None}, days=[], public_keys=[])
    document["files"][0]["kept"] = None
    document["digests"][0].update(saved="trail-digests/x", signature=None)
    assert Result.from_json(document) == result


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "not a JSON object"),
        ({"version": 2, "files": [], "digests": []}, "version 2 is not 1"),
        ({"files": {}, "digests": []}, "'files' is not a list"),
        ({"files": [{"location": "x", "name": "y"}], "digests": []}, "files[0] lacks 'verdict'"),
        (
            {"files": [], "digests": [{"location": "x", "name": "y", "status": "valid", "end": 3}]},
            "digests[0].end is not text",
        ),
    ],
)
def test_a_malformed_artifact_is_one_error_naming_the_field(document: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^trail integrity: ") as raised:
        Result.from_json(document)
    assert problem in str(raised.value)


def test_log_day_reads_log_and_digest_names() -> None:
    trail = digestkit.build(hours=1)
    assert log_day(trail.log_names(0)[0]) == (ACCOUNT, REGION, "2026/11/20")
    assert log_day(f"/tmp/x/{trail.digest_name(0)}") == (ACCOUNT, REGION, "2026/11/20")
    assert log_day("export.jsonl") is None


def test_the_kit_stores_a_trail_as_cloudtrail_does(tmp_path: Path) -> None:
    """On disk: the AWSLogs layout, and a sidecar of signatures when asked."""
    trail = digestkit.build(hours=2, prefix="org")
    trail.write(tmp_path, sidecar=True)
    folder = tmp_path / f"org/AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/2026/11/20"
    sidecar = json.loads((folder / "signatures.json").read_text())
    assert sidecar == {name: stored.signature for name, stored in trail.digests.items()}
    assert trail.digest(trail.digest_name(1))["previousDigestS3Object"].startswith("org/AWSLogs/")
    assert trail.check().counts() == {"validated": 4}


def test_the_kit_puts_a_trail_in_s3_with_signature_metadata() -> None:
    """In moto's S3, each digest carries its signature as ``x-amz-meta-signature``, as
    CloudTrail writes it (and ``aws cloudtrail validate-logs`` reads it):
    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html
    """
    import boto3
    from moto import mock_aws

    trail = digestkit.build(hours=2)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        trail.put(s3)
        digests = []
        for stored in trail.digests.values():
            got = s3.get_object(Bucket=trail.bucket, Key=stored.key)
            metadata = got["Metadata"]
            location = f"s3://{trail.bucket}/{stored.key}"
            digests.append(DigestFile(location, got["Body"].read(), metadata["signature"]))
            assert metadata["signature-algorithm"] == "SHA256withRSA"
    result = check(trail.log_files(), digests, trail.public_keys(), days=trail.days())
    assert result.counts() == {"validated": 4}


def test_a_link_into_the_trails_former_bucket_or_prefix_is_where_the_read_starts() -> None:
    """The trail moved to another bucket (or key prefix): its first digest there names the
    last one in the former place, which was never listed. The AWS CLI switches bucket there
    (``previousDigestS3Bucket``); here that link is where the chain read starts, no gap."""
    before = fmt.digest_key(ACCOUNT, REGION, digestkit.TRAIL, REGION, START)  # same day read
    for previous in [("former-bucket", before), (digestkit.BUCKET, f"former/{before}")]:
        trail = digestkit.build(hours=2, previous=(*previous, "ab" * 32, "cd" * 256))
        result = trail.check()
        assert result.digest_counts() == {"valid": 2}, previous
        assert result.counts() == {"validated": 4}
        assert not result.tampering
    # the same bucket and prefix: the previous digest should have been there, but nothing
    # of the trail older than it is left (what lifecycle expiration leaves): unproven
    trail = digestkit.build(hours=2, previous=(digestkit.BUCKET, before, "ab" * 32, "cd" * 256))
    result = trail.check()
    assert result.digest_counts() == {"valid": 2, "expired or absent": 1}
    assert not result.tampering


def test_a_backfill_digest_whose_key_is_not_known_is_unproven_not_forged() -> None:
    """Backfill digests are signed with the key valid when they were generated, which the
    keys asked for the digests' times may not include."""
    trail = digestkit.build(hours=2, backfill=True, signer="backfill-era")
    assert trail.digest_name(0).endswith("_backfill.json.gz")
    result = trail.check()
    assert result.digest_counts() == {"signature unavailable": 2}
    assert "backfill digest, signed with the key of when it was generated" in (
        details(result, trail.digest_name(0))
    )
    assert result.counts() == {"not covered": 4}
    assert not result.tampering
    known = [*trail.public_keys(), digestkit.public_key("backfill-era")]
    proven = check(trail.log_files(), trail.digest_files(), known, days=trail.days())
    assert proven.digest_counts() == {"valid": 2} and proven.counts() == {"validated": 4}
    # a digest that is not a backfill one, with an unknown key, is forged
    forged = digestkit.build(hours=1, signer="backfill-era")
    assert forged.check().digest_counts() == {"signature invalid": 1}


def withheld(trail: digestkit.Trail, hours: list[int]) -> list[DigestFile]:
    """The trail's digests, those of ``hours`` listed but denied when fetched."""
    names = {trail.digest_name(h) for h in hours}
    return [
        DigestFile(d.location, b"", None, problem="cannot fetch (AccessDenied)")
        if d.name in names
        else d
        for d in trail.digest_files()
    ]


def test_one_digest_withheld_while_its_chain_reads_is_a_failure() -> None:
    """An attacker denying reads of the one digest that lists the log file they deleted."""
    trail = digestkit.build(hours=3)
    hidden = trail.digest_name(1)
    trail.delete_log(trail.log_names(1)[0])
    digests = withheld(trail, [1])
    result = check(trail.log_files(), digests, trail.public_keys(), days=trail.days())
    assert statuses(result) == {
        trail.digest_name(0): "valid",
        hidden: "unreadable",
        trail.digest_name(2): "valid",
    }
    assert details(result, hidden) == (
        "cannot fetch (AccessDenied), while the chain's other digests could be read"
    )
    left = trail.log_names(1)[1]
    assert verdicts(result)[left] == "digest missing"
    assert details(result, left) == f"its period's digest {hidden} could not be read"
    assert result.counts() == {"validated": 4, "digest missing": 1}
    assert result.tampering


def test_a_chain_none_of_whose_digests_could_be_fetched_is_unproven() -> None:
    trail = digestkit.build(hours=2)
    digests = withheld(trail, [0, 1])
    result = check(trail.log_files(), digests, trail.public_keys(), days=trail.days())
    assert result.digest_counts() == {"not fetched": 2}
    assert {d.detail for d in result.digests} == {"cannot fetch (AccessDenied)"}
    assert result.counts() == {"not covered": 4}
    assert not result.tampering


def test_keys_lacking_in_one_region_do_not_excuse_another_regions_forgery() -> None:
    """ListPublicKeys failed in us-east-1 only: its digests are unproven; a digest of
    eu-west-1, whose keys were had, naming a key none of them is, is forged."""
    eu = digestkit.build(hours=2)
    us = digestkit.build(hours=2, region="us-east-1", signer="us-east-1")
    eu.forge(eu.digest_name(1))
    problems = {"us-east-1": "ListPublicKeys: AccessDenied"}
    result = check(
        eu.log_files() + us.log_files(),
        eu.digest_files() + us.digest_files(),
        eu.public_keys(),
        days=eu.days() | us.days(),
        keys_problem=problems,
    )
    assert statuses(result) == {
        eu.digest_name(0): "valid",
        eu.digest_name(1): "signature invalid",
        us.digest_name(0): "signature unavailable",
        us.digest_name(1): "signature unavailable",
    }
    assert "none has fingerprint" in details(result, eu.digest_name(1))
    assert details(result, us.digest_name(0)) == (
        "no public key to check it (ListPublicKeys: AccessDenied)"
    )
    assert result.tampering
    # a str still speaks for every Region
    every = check(eu.log_files(), eu.digest_files(), [], days=eu.days(), keys_problem="denied")
    assert every.digest_counts() == {"signature unavailable": 2}
