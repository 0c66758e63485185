"""The sandbox's CloudTrail records, field by field, as AWS's KMS log entries have them (the
developer guide's examples: ct-createalias, ct-updatealias, ct-creategrant,
ct-getparametersforimport, https://docs.aws.amazon.com/kms/latest/developerguide/), and the S3
bucket-level writes it names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir.sandbox import Sandbox, trail_calls

from .test_sandbox_trail import events_named, own_events


def test_alias_records_name_the_alias_and_its_keys(rogue_grant: Sandbox) -> None:
    """ct-createalias, ct-updatealias: the alias's ARN and the key's in ``resources`` (both typed
    AWS::KMS::Key, as AWS logs them), the target's ARN as ``responseElements.keyId``;
    a DeleteAlias names the key the alias pointed to, so a key's collect sees it deleted."""
    kms = rogue_grant.session().client("kms")
    old = rogue_grant.keys["payments"]
    new = kms.create_key(Description="spare")["KeyMetadata"]
    alias_arn = f"arn:aws:kms:{rogue_grant.region}:{rogue_grant.account}:alias/payments-prod"
    kms.update_alias(AliasName="alias/payments-prod", TargetKeyId=new["KeyId"])
    kms.delete_alias(AliasName="alias/payments-prod")
    kms.create_alias(AliasName="alias/payments-prod", TargetKeyId=old["id"])

    def arns(event: dict[str, Any]) -> list[str]:
        assert {r["type"] for r in event["resources"]} == {"AWS::KMS::Key"}
        return [r["ARN"] for r in event["resources"]]

    (updated,) = events_named(rogue_grant, "UpdateAlias")
    assert arns(updated) == [alias_arn, old["arn"], new["Arn"]]
    assert updated["responseElements"] == {"keyId": new["Arn"]}
    (deleted,) = events_named(rogue_grant, "DeleteAlias")
    assert arns(deleted) == [alias_arn, new["Arn"]]
    assert deleted["responseElements"] == {"keyId": new["Arn"]}
    (created,) = own_events(rogue_grant, "CreateAlias")
    assert arns(created) == [old["arn"], alias_arn]
    assert created["responseElements"] == {"keyId": old["arn"]}
    # refused (the alias is gone): the record still names the alias
    with pytest.raises(ClientError):
        kms.delete_alias(AliasName="alias/nothing-here")
    (refused,) = [e for e in events_named(rogue_grant, "DeleteAlias") if "errorCode" in e]
    assert arns(refused) == [alias_arn.replace("payments-prod", "nothing-here")]
    assert refused["responseElements"] is None


def test_a_grant_token_is_never_logged(rogue_grant: Sandbox) -> None:
    """ct-creategrant: AWS logs the grant's id and key, never its token (a bearer credential
    botocore does not call sensitive)."""
    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]
    grantee = f"arn:aws:iam::{rogue_grant.account}:role/payments-app"
    made = kms.create_grant(KeyId=key["id"], GranteePrincipal=grantee, Operations=["Decrypt"])
    kms.retire_grant(GrantToken=made["GrantToken"])
    kms.encrypt(KeyId=key["id"], Plaintext=b"x", GrantTokens=[made["GrantToken"]])
    (created,) = own_events(rogue_grant, "CreateGrant")
    assert created["responseElements"] == {"grantId": made["GrantId"], "keyId": key["arn"]}
    retired = events_named(rogue_grant, "RetireGrant")
    encrypted = own_events(rogue_grant, "Encrypt")
    assert retired and encrypted
    for event in [created, *retired, *encrypted]:
        text = json.dumps(event)
        assert made["GrantToken"] not in text and "grantToken" not in text


def test_get_parameters_for_import_is_logged_read_only_without_its_answer(
    rogue_grant: Sandbox,
) -> None:
    """ct-getparametersforimport: ``readOnly: true``, ``responseElements: null`` (https://docs
    .aws.amazon.com/kms/latest/developerguide/ct-getparametersforimport.html)."""
    kms = rogue_grant.session().client("kms")
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    (event,) = events_named(rogue_grant, "GetParametersForImport")
    assert event["readOnly"] is True and event["responseElements"] is None
    assert event["requestParameters"] == {
        "keyId": key["KeyId"],
        "wrappingAlgorithm": "RSAES_OAEP_SHA_256",
        "wrappingKeySpec": "RSA_2048",
    }
    assert event["resources"][0]["ARN"] == key["Arn"]


def test_an_assumed_roles_record_agrees_with_get_caller_identity(rogue_grant: Sandbox) -> None:
    """Its ARN is what the sandbox's GetCallerIdentity answers; its session has a
    ``creationDate`` and ``mfaAuthenticated``, as AWS's records of assumed roles do."""
    import boto3

    session = rogue_grant.session()
    role = f"arn:aws:iam::{rogue_grant.account}:role/payments-app"
    credentials = session.client("sts").assume_role(RoleArn=role, RoleSessionName="ir-1")[
        "Credentials"
    ]
    assumed = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=rogue_grant.region,
    )
    who = assumed.client("sts").get_caller_identity()
    assumed.client("kms").disable_key(KeyId=rogue_grant.keys["payments"]["id"])
    (event,) = events_named(rogue_grant, "DisableKey")
    identity = event["userIdentity"]
    assert identity["type"] == "AssumedRole" and identity["arn"] == who["Arn"]
    assert identity["accessKeyId"] == credentials["AccessKeyId"]
    attributes = identity["sessionContext"]["attributes"]
    assert attributes["mfaAuthenticated"] == "false"
    assert attributes["creationDate"] <= event["eventTime"]
    assert len(attributes["creationDate"]) == len("2026-12-02T05:00:00Z")


def test_every_bucket_level_s3_write_is_named(rogue_grant: Sandbox) -> None:
    """From botocore's S3 model, not a hand list: subresources moto answers are recorded."""
    s3 = rogue_grant.session().client("s3")
    bucket = rogue_grant.trail_bucket
    s3.put_bucket_accelerate_configuration(
        Bucket=bucket, AccelerateConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_ownership_controls(
        Bucket=bucket,
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    s3.put_bucket_inventory_configuration(
        Bucket=bucket,
        Id="weekly",
        InventoryConfiguration={
            "Destination": {
                "S3BucketDestination": {"Bucket": f"arn:aws:s3:::{bucket}", "Format": "CSV"}
            },
            "IsEnabled": True,
            "Id": "weekly",
            "IncludedObjectVersions": "Current",
            "Schedule": {"Frequency": "Weekly"},
        },
    )
    for name in (
        "PutBucketAccelerateConfiguration",
        "PutBucketOwnershipControls",
        "PutBucketInventoryConfiguration",
    ):
        (event,) = events_named(rogue_grant, name)
        assert event["requestParameters"]["bucketName"] == bucket
        assert event["eventSource"] == "s3.amazonaws.com" and "errorCode" not in event

    class Request:
        def __init__(self, method: str, query: str) -> None:
            self.method, self.args = method, dict.fromkeys([q for q in [query] if q], "")

    routes: dict[tuple[str, str], str | None] = {
        ("PUT", "intelligent-tiering"): "PutBucketIntelligentTieringConfiguration",
        ("DELETE", "metrics"): "DeleteBucketMetricsConfiguration",
        ("PUT", "analytics"): "PutBucketAnalyticsConfiguration",
        ("PUT", "requestPayment"): "PutBucketRequestPayment",
        ("PUT", "lifecycle"): "PutBucketLifecycleConfiguration",  # not the deprecated one
        ("PUT", ""): "CreateBucket",
        ("GET", "metrics"): None,  # a read
        ("PUT", "no-such-subresource"): None,
    }
    for (method, query), expected in routes.items():
        assert trail_calls.s3_bucket_action(Request(method, query)) == expected
