"""The sandbox's own CloudTrail: whoever changes the world (kmsir, the AWS CLI against
``sandbox serve``, an inject) leaves a record in LookupEvents and in the trail bucket.

The records follow AWS's KMS log entries, the developer guide's examples under "Logging AWS KMS
API calls with AWS CloudTrail": camelCase ``requestParameters``, the key in ``resources`` as
``{"accountId", "type": "AWS::KMS::Key", "ARN"}``, ``eventType: AwsApiCall`` (ct-enablekeyrotation,
https://docs.aws.amazon.com/kms/latest/developerguide/ct-enablekeyrotation.html). A change that
answers nothing logs its key's ARN as ``responseElements.keyId`` ("CloudTrail log entries for
this operation recorded on or after December 2022 include the key ARN of the affected KMS key
in the responseElements.keyId value": ct-creategrant and ct-createalias,
https://docs.aws.amazon.com/kms/latest/developerguide/ct-creategrant.html,
https://docs.aws.amazon.com/kms/latest/developerguide/ct-createalias.html; ct-disablekey).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir.sandbox import Sandbox, lookup, recorder
from kmsir.sandbox import scenario as scenarios

from .conftest import played, served, served_cli_env

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


def events_named(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    """The CloudTrail records LookupEvents returns for ``name`` (newest first)."""
    found = (
        sandbox.session()
        .client("cloudtrail")
        .lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}])
    )
    return [json.loads(e["CloudTrailEvent"]) for e in found["Events"]]


def own_events(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    """The records of ``name`` made in this test (the scenario's story has other addresses)."""
    return [e for e in events_named(sandbox, name) if e["sourceIPAddress"] == "127.0.0.1"]


def trail_file_records(sandbox: Sandbox, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the trail file the recorder wrote for ``event``."""
    s3 = sandbox.session().client("s3")
    unique = event["eventID"].replace("-", "")[:16]
    listed = s3.list_objects_v2(Bucket=sandbox.trail_bucket)["Contents"]
    (key,) = [o["Key"] for o in listed if o["Key"].endswith(f"_{unique}.json.gz")]
    day = event["eventTime"][:10].replace("-", "/")
    assert key.startswith(f"AWSLogs/{sandbox.account}/CloudTrail/{event['awsRegion']}/{day}/")
    body = s3.get_object(Bucket=sandbox.trail_bucket, Key=key)["Body"].read()
    return list(json.loads(gzip.decompress(body))["Records"])


def delivered(sandbox: Sandbox, bucket: str, event: dict[str, Any]) -> list[str]:
    """The keys of ``bucket``'s trail files holding ``event`` (one file a record)."""
    s3 = sandbox.session().client("s3")
    unique = event["eventID"].replace("-", "")[:16]
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in listed if o["Key"].endswith(f"_{unique}.json.gz")]


def test_kmsirs_own_disable_key_is_in_lookup_and_the_trail_bucket(rogue_grant: Sandbox) -> None:
    key = rogue_grant.keys["payments"]
    factory = rogue_grant.client_factory()
    answer = factory.client("kms").disable_key(KeyId=key["id"])
    caller = factory.client("sts").get_caller_identity()
    (event,) = events_named(rogue_grant, "DisableKey")  # the story has none
    assert event["userIdentity"]["arn"] == caller["Arn"]
    assert event["userIdentity"]["type"] == "IAMUser"
    assert event["userIdentity"]["accessKeyId"] == "AKIAIOSFODNN7SANDBOX"
    assert event["userIdentity"]["accountId"] == rogue_grant.account
    assert event["userAgent"].startswith("Boto3/") and "kmsir/" in event["userAgent"]
    assert event["sourceIPAddress"] == "127.0.0.1"
    assert event["eventSource"] == "kms.amazonaws.com" and event["awsRegion"] == "eu-west-1"
    assert event["requestParameters"] == {"keyId": key["id"]}
    # ct-disablekey: the key's ARN, although DisableKey answers nothing
    assert event["responseElements"] == {"keyId": key["arn"]} and event["readOnly"] is False
    assert event["resources"] == [
        {"accountId": rogue_grant.account, "type": "AWS::KMS::Key", "ARN": key["arn"]}
    ]
    assert (event["eventType"], event["eventCategory"]) == ("AwsApiCall", "Management")
    assert event["managementEvent"] is True and event["recipientAccountId"] == rogue_grant.account
    assert event["eventVersion"] == "1.10" and "errorCode" not in event
    assert event["requestID"] == answer["ResponseMetadata"]["RequestId"]  # as AWS pairs them
    assert trail_file_records(rogue_grant, event) == [event]
    assert rogue_grant.trail is not None and rogue_grant.trail.failures == []


def test_a_refused_call_carries_its_error_and_no_secret(rogue_grant: Sandbox) -> None:
    key = rogue_grant.keys["payments"]
    kms = rogue_grant.session().client("kms")
    kms.disable_key(KeyId=key["id"])
    with pytest.raises(ClientError):
        kms.encrypt(KeyId=key["id"], Plaintext=b"card 4111", EncryptionContext={"App": "pay"})
    (event,) = events_named(rogue_grant, "Encrypt")
    assert event["errorCode"] == "DisabledException"
    assert event["errorMessage"] == f"{key['arn']} is disabled."
    # the plaintext never reaches the log; the encryption context's keys stay as they are
    assert event["requestParameters"] == {"keyId": key["id"], "encryptionContext": {"App": "pay"}}
    assert event["responseElements"] is None and event["readOnly"] is True
    # refused before moto handles it (an explicit Deny of the key policy): recorded too
    deny = {"Effect": "Deny", "Principal": "*", "Action": "kms:ScheduleKeyDeletion"}
    allow = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [allow, {**deny, "Resource": "*"}]}
    kms.put_key_policy(KeyId=key["id"], PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError, match="AccessDeniedException"):
        kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7)
    (refused,) = [e for e in events_named(rogue_grant, "ScheduleKeyDeletion") if "errorCode" in e]
    assert refused["errorCode"] == "AccessDeniedException"
    assert refused["requestParameters"] == {"keyId": key["id"], "pendingWindowInDays": 7}
    (put,) = events_named(rogue_grant, "PutKeyPolicy")
    assert json.loads(put["requestParameters"]["policy"]) == policy


def test_crypto_calls_are_recorded_without_their_material(rogue_grant: Sandbox) -> None:
    key = rogue_grant.keys["payments"]
    kms = rogue_grant.session().client("kms")
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"x")["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)
    kms.generate_data_key(KeyId=key["id"], KeySpec="AES_256")
    for name in ("Encrypt", "Decrypt", "GenerateDataKey"):
        event = next(
            e for e in events_named(rogue_grant, name) if e["userAgent"].startswith("Boto3")
        )
        assert event["responseElements"] is None and event["readOnly"] is True
        assert event["resources"][0]["ARN"] == key["arn"]  # Decrypt: from the ciphertext
        text = json.dumps(event["requestParameters"])
        assert "plaintext" not in text and "ciphertextBlob" not in text


def test_other_services_changes_are_recorded_s3_data_calls_not(rogue_grant: Sandbox) -> None:
    session = rogue_grant.session()
    s3 = session.client("s3")
    arn = rogue_grant.keys["payments"]["arn"]
    location = {"LocationConstraint": rogue_grant.region}
    s3.create_bucket(Bucket="exfil-staging", CreateBucketConfiguration=location)
    default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn}
    s3.put_bucket_encryption(
        Bucket="exfil-staging",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default}]
        },
    )
    s3.put_object(Bucket="exfil-staging", Key="dump.csv", Body=b"pan,exp")  # a data event
    s3.delete_object(Bucket="exfil-staging", Key="dump.csv")
    (put,) = events_named(rogue_grant, "PutBucketEncryption")
    assert put["eventSource"] == "s3.amazonaws.com"
    assert put["requestParameters"]["bucketName"] == "exfil-staging"
    rules = put["requestParameters"]["serverSideEncryptionConfiguration"]["rules"]
    assert rules == [{"applyServerSideEncryptionByDefault": default}]  # the key id is logged
    assert [e["eventName"] for e in events_named(rogue_grant, "CreateBucket")] == ["CreateBucket"]
    assert events_named(rogue_grant, "PutObject") == events_named(rogue_grant, "DeleteObject") == []
    # IAM is global: its records are in us-east-1's event history, as in AWS
    iam = session.client("iam")
    iam.create_user(UserName="break-glass")
    (created,) = [
        e
        for e in lookup.history(rogue_grant.account, "us-east-1")
        if e["eventName"] == "CreateUser"
    ]
    assert created["eventSource"] == "iam.amazonaws.com"
    assert created["requestParameters"] == {"userName": "break-glass"}
    assert created["responseElements"]["user"]["userName"] == "break-glass"


def test_reads_are_not_recorded_and_seeding_left_no_records(rogue_grant: Sandbox) -> None:
    before = lookup.history(rogue_grant.account, rogue_grant.region)
    # the scenario's story only: none of the seeding's calls (CreateKey, CreateTrail...)
    assert all(e["sourceIPAddress"] != "127.0.0.1" for e in before)
    assert not {"CreateKey", "CreateAlias", "CreateTrail", "CreateUser"} & {
        e["eventName"] for e in before
    }
    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]["id"]
    kms.describe_key(KeyId=key)
    kms.list_keys()
    kms.get_key_policy(KeyId=key, PolicyName="default")
    kms.list_grants(KeyId=key)
    rogue_grant.session().client("cloudtrail").lookup_events(MaxResults=1)
    rogue_grant.session().client("s3").list_objects_v2(Bucket=rogue_grant.trail_bucket)
    assert lookup.history(rogue_grant.account, rogue_grant.region) == before


def test_the_same_calls_get_the_same_ids() -> None:
    world = scenarios.load("rogue-grant")
    ids = []
    for _ in range(2):
        with Sandbox(world) as sandbox:
            kms = sandbox.session().client("kms")
            kms.disable_key(KeyId=sandbox.keys["payments"]["id"])
            kms.enable_key(KeyId=sandbox.keys["payments"]["id"])
            kms.disable_key(KeyId=sandbox.keys["payments"]["id"])
            ids.append(
                [(e["eventID"], e["requestID"]) for e in events_named(sandbox, "DisableKey")]
            )
    assert ids[0] == ids[1] and len(set(ids[0])) == 2


def test_an_inject_call_its_story_tells_of_is_not_recorded_twice(rogue_grant: Sandbox) -> None:
    (record,) = rogue_grant.after_step("disable")
    assert record["calls"][0]["error_code"] is None  # the call was made
    (event,) = events_named(rogue_grant, "ScheduleKeyDeletion")  # the story's, only
    assert event["sourceIPAddress"] == "203.0.113.45"


def untold(tmp_path: Path) -> Path:
    """rogue-grant with its inject's story telling of another call than the one it makes."""
    text = (scenarios.scenario_dir() / "rogue-grant.yaml").read_text()
    story = "    history:\n      - event: ScheduleKeyDeletion\n"
    assert text.count(story) == 1
    path = tmp_path / "untold.yaml"
    path.write_text(text.replace(story, "    history:\n      - event: DescribeKey\n"))
    return path


def test_an_inject_call_its_story_does_not_tell_of_is_its_actors(tmp_path: Path) -> None:
    with Sandbox(scenarios.load(str(untold(tmp_path)))) as sandbox:
        (record,) = sandbox.after_step("disable")
        (event,) = events_named(sandbox, "ScheduleKeyDeletion")
    assert event["userIdentity"]["arn"].endswith(":assumed-role/ci-deploy/build-4821")
    assert event["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"] == "ci-deploy"
    assert event["sourceIPAddress"] == "203.0.113.45"
    assert event["userAgent"].startswith("aws-cli/2.15.30")
    assert event["eventTime"] == record["at"][:19] + "Z"
    assert event["requestParameters"]["pendingWindowInDays"] == 7
    assert "errorCode" not in event


def test_a_contained_actors_untold_attempt_is_logged_refused(tmp_path: Path) -> None:
    with Sandbox(scenarios.load(str(untold(tmp_path)))) as sandbox:
        sandbox.session().client("iam").attach_role_policy(
            RoleName="ci-deploy", PolicyArn="arn:aws:iam::aws:policy/AWSDenyAll"
        )
        (record,) = sandbox.after_step("disable")
        assert record["calls"][0]["blocked"] is True
        (event,) = events_named(sandbox, "ScheduleKeyDeletion")
        assert event["errorCode"] == record["calls"][0]["error_code"] == "AccessDeniedException"
        assert event["errorMessage"] == record["calls"][0]["error_message"]
        assert event["userIdentity"]["arn"].endswith(":assumed-role/ci-deploy/build-4821")
        assert event["resources"][0]["ARN"] == sandbox.keys["payments"]["arn"]
        assert event["responseElements"] is None
        assert trail_file_records(sandbox, event) == [event]


def test_a_rebuilt_world_holds_the_same_records_for_the_journaled_calls(tmp_path: Path) -> None:
    from kmsir.evidence.bundle import JOURNAL, read_journal
    from kmsir.evidence.calls import Call
    from kmsir.run.launch import rebuild_sandbox

    def own(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
        """kmsir's records (IAM's are global: us-east-1's history has them, as in AWS)."""
        return {
            e["eventID"]: e
            for region in {sandbox.region, "us-east-1"}
            for e in lookup.history(sandbox.account, region)
            if e["sourceIPAddress"] == "127.0.0.1" and "kmsir/" in e["userAgent"]
        }

    with played("rogue-grant", tmp_path) as (original, result):
        first = own(original)
        world = original.record()
    view = read_journal(result.bundle / JOURNAL).view()
    made = [m for m in view.world if isinstance(m.record, Call)]
    with rebuild_sandbox(world, "rogue-grant") as again:
        again.replay(view)
        rebuilt = own(again)
    assert made and len(rebuilt) == len(
        [m for m in made if recorder.recorded(m.record.service, m.record.operation)]
    )
    assert set(rebuilt) <= set(first)  # the same ids, not a second copy
    times = sorted(m.ts[:19] + "Z" for m in made)
    assert sorted(e["eventTime"] for e in rebuilt.values()) == times
    for event_id, event in rebuilt.items():
        assert {k: v for k, v in event.items() if k != "eventTime"} == {
            k: v for k, v in first[event_id].items() if k != "eventTime"
        }


@pytest.mark.skipif(
    AWS is None and not os.environ.get("CI"), reason="needs the AWS CLI (pip install awscli)"
)
def test_the_aws_clis_disable_key_is_in_the_trail_with_its_identity(tmp_path: Path) -> None:
    assert AWS is not None
    with served("rogue-grant", tmp_path) as exported:
        env = served_cli_env(exported)

        def run(*args: str) -> str:
            done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            return done.stdout

        def aws(*args: str) -> Any:
            return json.loads(run(AWS, *args, "--output", "json") or "null")

        key = aws("kms", "describe-key", "--key-id", "alias/payments-prod")["KeyMetadata"]
        aws("kms", "disable-key", "--key-id", key["KeyId"])
        who = aws("sts", "get-caller-identity")
        found = aws(
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=EventName,AttributeValue=DisableKey",
        )["Events"]
        (event,) = [json.loads(e["CloudTrailEvent"]) for e in found]
        assert event["userIdentity"]["arn"] == who["Arn"]
        assert event["userIdentity"]["accountId"] == who["Account"]
        assert event["userAgent"].startswith("aws-cli/")
        assert event["requestParameters"] == {"keyId": key["KeyId"]}
        assert event["resources"][0]["ARN"] == key["Arn"]
        assert event["sourceIPAddress"] == "127.0.0.1"
        (trail,) = aws("cloudtrail", "describe-trails")["trailList"]
        assert trail["Name"] == recorder.TRAIL_NAME and trail["IsMultiRegionTrail"]
        assert aws("cloudtrail", "get-trail-status", "--name", trail["Name"])["IsLogging"]
        # the trail bucket holds it too: kmsir's scanner finds it there
        matched = run(
            sys.executable,
            "-m",
            "kmsir",
            "cloudtrail",
            "scan",
            f"s3://{trail['S3BucketName']}",
            "--key",
            key["KeyId"],
            "--out",
            "-",
        )
        scanned = [json.loads(line) for line in matched.splitlines() if line.strip()]
        assert event["eventID"] in {e.get("eventID") for e in scanned}
