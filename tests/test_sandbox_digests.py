"""The sandbox trail's digest files: signed, chained, hourly, written lazily and never again,
listing what was delivered even once it is gone; ListPublicKeys gives their key; kmsir's
validator and the AWS CLI's ``validate-logs`` reach the same verdicts on them.

AWS's digest format and chain:
https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-digest-file-structure.html
and what ``validate-logs`` checks:
https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-cli.html
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kmsir.sandbox import Sandbox, lookup, recorder, trail_digests
from kmsir.sandbox import scenario as scenarios
from kmsir.trail import digest_format
from kmsir.trail.integrity import DigestFile, LogFile, Result, check, log_day

from .conftest import served, served_cli_env, served_client

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
TRAIL_ARN = f"arn:aws:cloudtrail:eu-west-1:{scenarios.ACCOUNT}:trail/{recorder.TRAIL_NAME}"


def objects(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """Every object of ``bucket``: key -> its bytes and metadata."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = {"body": got["Body"].read(), "metadata": got["Metadata"]}
    return found


def digests_of(stored: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The digest files among ``stored``: key -> their JSON."""
    return {
        key: json.loads(gzip.decompress(value["body"]))
        for key, value in sorted(stored.items())
        if "/CloudTrail-Digest/" in key
    }


def validated(s3: Any, cloudtrail: Any, bucket: str) -> Result:
    """kmsir's check of the whole bucket, read through ``s3`` with the keys ``cloudtrail``'s
    ListPublicKeys gives (every day's folder was read: the days span the whole bucket)."""
    stored = objects(s3, bucket)
    logs, digests = [], []
    for key, value in stored.items():
        location = f"s3://{bucket}/{key}"
        if "/CloudTrail-Digest/" in key:
            signature = value["metadata"].get("signature")
            digests.append(DigestFile(location, value["body"], signature, "SHA256withRSA"))
        elif "/CloudTrail/" in key:
            logs.append(LogFile(location, digest_format.log_hash(gzip.decompress(value["body"]))))
    listed = cloudtrail.list_public_keys(
        StartTime=datetime.now(timezone.utc) - timedelta(days=120),
        EndTime=datetime.now(timezone.utc) + timedelta(days=1),
    )
    keys = [
        digest_format.PublicKey(k["Fingerprint"], digest_format.der_key(k["Value"]))
        for k in listed["PublicKeyList"]
    ]
    days = {day for key in stored if (day := log_day(key)) is not None}
    first = min(datetime.strptime(d, "%Y/%m/%d") for _, _, d in days)
    last = max(datetime.strptime(d, "%Y/%m/%d") for _, _, d in days)
    account, region = scenarios.ACCOUNT, "eu-west-1"
    every_day = {
        (account, region, f"{first + timedelta(days=n):%Y/%m/%d}")
        for n in range((last - first).days + 1)
    }
    return check(logs, digests, keys, days=every_day)


def verdicts(result: Result) -> dict[str, str]:
    return {f.name: f.verdict for f in result.files}


# -- the digests ----------------------------------------------------------------------------


def test_the_trail_bucket_has_signed_chained_digests_that_kmsir_validates(
    rogue_grant: Sandbox,
) -> None:
    session = rogue_grant.session()
    s3, cloudtrail = session.client("s3"), session.client("cloudtrail")
    result = validated(s3, cloudtrail, rogue_grant.trail_bucket)
    assert result.files and set(verdicts(result).values()) == {"validated"}
    assert result.digest_counts() == {"valid": len(result.digests)} and not result.tampering
    # each digest links to the one before it (the first to none), as AWS chains them
    digests = list(digests_of(objects(s3, rogue_grant.trail_bucket)).items())
    assert digests[0][1]["previousDigestSignature"] is None
    for (before_key, before), (_, after) in itertools.pairwise(digests):
        assert after["previousDigestS3Object"] == before_key
        assert after["digestStartTime"] == before["digestEndTime"]
    for key, digest in digests:
        assert digest["digestS3Object"] == key and digest["digestEndTime"].endswith(":00:00Z")
        assert digest_format.DIGEST_NAME.match(key.rsplit("/", 1)[1])


def test_each_log_file_s_name_time_falls_in_the_period_of_the_digest_listing_it(
    rogue_grant: Sandbox,
) -> None:
    # CloudTrail names a log file with its delivery time; a validator reads that time to tell
    # which (missing) digest a log file belonged to. Seeded history files are named so too.
    digests = digests_of(objects(rogue_grant.session().client("s3"), rogue_grant.trail_bucket))
    listed = 0
    for digest in digests.values():
        start = digest_format.parse_iso(digest["digestStartTime"])
        end = digest_format.parse_iso(digest["digestEndTime"])
        assert start is not None and end is not None
        for entry in digest["logFiles"]:
            named = digest_format.LOG_NAME.match(entry["s3Object"].rsplit("/", 1)[1])
            assert named is not None, entry["s3Object"]
            moment = datetime.strptime(named["day"] + named["time"], "%Y%m%d%H%M").replace(
                tzinfo=timezone.utc
            )
            assert start <= moment < end, (entry["s3Object"], start, end)
            listed += 1
    assert listed > 1 and any(
        "_sim.json.gz" in k
        for d in digests.values()
        for k in (e["s3Object"] for e in d["logFiles"])
    )


#: Builds a scenario's world at a fixed time in a fresh process and prints a hash of every
#: digest file of its trail bucket (key, bytes, signature metadata).
WORLD_DIGESTS = """
import hashlib, json, sys
from datetime import datetime, timezone
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
now = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
with Sandbox(scenarios.load(sys.argv[1]), now=now, clock=lambda: now) as sandbox:
    s3 = sandbox.session().client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sandbox.trail_bucket):
        for item in page.get("Contents", []):
            if "/CloudTrail-Digest/" in item["Key"]:
                got = s3.get_object(Bucket=sandbox.trail_bucket, Key=item["Key"])
                found[item["Key"]] = [got["Body"].read().hex(), got["Metadata"]]
print(len(found), hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest())
"""


def test_the_same_scenario_gives_byte_identical_digests_in_every_process() -> None:
    # the sandbox is deterministic (a resumed run rebuilds the same world): the same scenario
    # and clock give the same digests, fingerprint, signatures and previousDigestSignature,
    # whichever process builds it (the signing key is a fixed, simulated one)
    said = [
        subprocess.run(
            [sys.executable, "-c", WORLD_DIGESTS, "rogue-grant"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for _ in range(2)
    ]
    assert said[0] == said[1] and int(said[0][0]) > 1


def test_list_public_keys_gives_the_key_of_the_digests_and_follows_the_time_range(
    rogue_grant: Sandbox,
) -> None:
    from botocore.exceptions import ClientError

    cloudtrail = rogue_grant.session().client("cloudtrail")
    (current,) = cloudtrail.list_public_keys()["PublicKeyList"]  # no range: the current key
    der = digest_format.der_key(current["Value"])  # boto3 decoded the blob: the DER itself
    assert current["Value"] == der
    s3 = rogue_grant.session().client("s3")
    digests = digests_of(objects(s3, rogue_grant.trail_bucket))
    assert {d["digestPublicKeyFingerprint"] for d in digests.values()} == {current["Fingerprint"]}
    assert current["ValidityStartTime"] < rogue_grant.now < current["ValidityEndTime"]
    long_ago = datetime(2001, 1, 1, tzinfo=timezone.utc)
    listed = cloudtrail.list_public_keys(StartTime=long_ago, EndTime=long_ago + timedelta(days=1))
    assert listed["PublicKeyList"] == []
    with pytest.raises(ClientError) as refused:
        cloudtrail.list_public_keys(StartTime=rogue_grant.now, EndTime=long_ago)
    assert refused.value.response["Error"]["Code"] == "InvalidTimeRangeException"


def test_digests_are_written_hourly_once_the_hour_closes_and_never_rewritten() -> None:
    now = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
    clock = [now]
    with Sandbox(scenarios.load("rogue-grant"), now=now, clock=lambda: clock[0]) as sandbox:
        session = sandbox.session()
        s3, kms = session.client("s3"), session.client("kms")
        bucket = sandbox.trail_bucket
        before = digests_of(objects(s3, bucket))
        # a call in the hour that has not closed: delivered, not yet in any digest
        clock[0] = now + timedelta(minutes=10)
        kms.disable_key(KeyId=sandbox.keys["payments"]["id"])
        assert digests_of(objects(s3, bucket)) == before
        # the hour closed: its digest lists the new log file, chained to the last digest
        clock[0] = now + timedelta(hours=1)
        after = digests_of(objects(s3, bucket))
        (new_key,) = set(after) - set(before)
        new = after[new_key]
        assert new["digestEndTime"] == "2026-11-20T10:00:00Z"
        assert new["previousDigestS3Object"] == max(before)
        (listed,) = new["logFiles"]
        assert "/CloudTrail/eu-west-1/2026/11/20/" in listed["s3Object"]
        # a delivery late for the sealed hour goes into the next digest; none is rewritten
        with recorder.acting(moment=now + timedelta(minutes=20)):
            kms.enable_key(KeyId=sandbox.keys["payments"]["id"])
        clock[0] = now + timedelta(hours=2)
        stored = objects(s3, bucket)
        later = digests_of(stored)
        (late_key,) = set(later) - set(after)
        assert later[late_key]["digestStartTime"] == "2026-11-20T10:00:00Z"
        assert [f["oldestEventTime"] for f in later[late_key]["logFiles"]] == [
            "2026-11-20T09:50:00Z"
        ]
        assert {k: later[k] for k in after} == after
        assert (
            stored[new_key]["metadata"]["signature"] == later[late_key]["previousDigestSignature"]
        )
        # asking again writes nothing more (bounded work: one digest per closed hour)
        ledger = trail_digests.ledger(sandbox.account, sandbox.region, bucket)
        assert ledger is not None
        written = list(ledger.written)
        objects(s3, bucket)
        assert ledger.written == written and len(written) == len(later)


def test_a_log_file_deleted_after_its_digest_is_found_deleted(rogue_grant: Sandbox) -> None:
    session = rogue_grant.session()
    s3, cloudtrail = session.client("s3"), session.client("cloudtrail")
    bucket = rogue_grant.trail_bucket
    stored = objects(s3, bucket)  # the digests are written by now
    digests = {k: v["body"] for k, v in stored.items() if "/CloudTrail-Digest/" in k}
    victim = sorted(k for k in stored if "/CloudTrail/" in k)[2]
    s3.delete_object(Bucket=bucket, Key=victim)
    result = validated(s3, cloudtrail, bucket)
    name = victim.rsplit("/", 1)[1]
    assert verdicts(result)[name] == "deleted" and result.tampering
    assert {v for n, v in verdicts(result).items() if n != name} == {"validated"}
    # the digest that listed it is as it was written
    assert {k: v["body"] for k, v in objects(s3, bucket).items() if k in digests} == digests


def test_a_trail_without_validation_writes_no_digest(rogue_grant: Sandbox) -> None:
    session = rogue_grant.session()
    session.client("cloudtrail").update_trail(
        Name=recorder.TRAIL_NAME, EnableLogFileValidation=False
    )
    stored = objects(session.client("s3"), rogue_grant.trail_bucket)
    assert stored and not digests_of(stored)


def test_the_tampering_scenario_deleted_the_log_file_holding_the_create_grant() -> None:
    with Sandbox(scenarios.load("trail-tampering")) as sandbox:
        session = sandbox.session()
        s3, cloudtrail = session.client("s3"), session.client("cloudtrail")
        (grant,) = [
            e
            for e in lookup.history(sandbox.account, sandbox.region)
            if e["eventName"] == "CreateGrant"
        ]
        stored = objects(s3, sandbox.trail_bucket)
        held = [
            key
            for key, value in stored.items()
            if "/CloudTrail/" in key
            and grant["eventID"]
            in {r["eventID"] for r in json.loads(gzip.decompress(value["body"]))["Records"]}
        ]
        assert held == []  # LookupEvents keeps it; the bucket does not
        result = validated(s3, cloudtrail, sandbox.trail_bucket)
    (deleted,) = [f for f in result.files if f.verdict == "deleted"]
    day = grant["eventTime"][:10].replace("-", "")
    assert deleted.name.startswith(f"{sandbox.account}_CloudTrail_eu-west-1_{day}T")
    assert result.counts() == {"validated": len(result.files) - 1, "deleted": 1}


# -- the AWS CLI against kmsir sandbox serve ------------------------------------------------


def validate_logs(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert AWS is not None
    start = datetime.now(timezone.utc) - timedelta(days=8)
    return subprocess.run(
        [
            AWS,
            "cloudtrail",
            "validate-logs",
            "--trail-arn",
            TRAIL_ARN,
            "--start-time",
            f"{start:%Y-%m-%dT%H:%M:%SZ}",
            "--verbose",
        ],
        env=env,
        capture_output=True,
        text=True,
    )


def cli_verdicts(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``validate-logs --verbose``'s word on each log file it names: name -> what it said."""
    found = {}
    for line in (done.stdout + done.stderr).splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "Log file":
            location, _, said = rest.partition("\t")
            found[location.rsplit("/", 1)[1]] = said
    return found


@pytest.mark.skipif(
    AWS is None and not os.environ.get("CI"), reason="needs the AWS CLI (pip install awscli)"
)
@pytest.mark.parametrize("scenario", ["rogue-grant", "trail-tampering"])
def test_aws_cli_validate_logs_agrees_with_kmsir_on_a_served_sandbox(
    scenario: str, tmp_path: Path
) -> None:
    with served(scenario, tmp_path) as exported:
        done = validate_logs(served_cli_env(exported))
        bucket = scenarios.trail_bucket(scenarios.ACCOUNT)
        ours = validated(
            served_client(exported, "s3"), served_client(exported, "cloudtrail"), bucket
        )
    said = cli_verdicts(done)
    assert "INVALID: public key" not in done.stderr and "INVALID: signature" not in done.stderr
    assert said and set(said) == set(verdicts(ours))
    if scenario == "rogue-grant":
        assert done.returncode == 0, done.stderr
        assert set(said.values()) == {"valid"} and "INVALID" not in done.stdout + done.stderr
        assert set(verdicts(ours).values()) == {"validated"}
    else:
        assert done.returncode == 1
        (gone,) = [name for name, verdict in verdicts(ours).items() if verdict == "deleted"]
        assert said.pop(gone) == "INVALID: not found"
        assert set(said.values()) == {"valid"}
    digests_said = [line for line in done.stdout.splitlines() if line.startswith("Digest file")]
    assert digests_said and all(line.endswith("\tvalid") for line in digests_said)
    assert len(digests_said) == len(ours.digests)
