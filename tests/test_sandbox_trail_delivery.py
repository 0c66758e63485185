"""The sandbox's CloudTrail delivery: a record reaches a trail's bucket only while the trail
logs, when its Region scope and selectors cover it, under its key prefix; the trail's own
StopLogging and DeleteTrail are delivered by it; LookupEvents keeps every record; recording
never shifts moto's seeded ids.
"""

from __future__ import annotations

from kmsir.sandbox import Sandbox, lookup, recorder
from kmsir.sandbox import scenario as scenarios

from .test_sandbox_trail import delivered, events_named, own_events, trail_file_records


def test_the_scenario_trail_is_shown_and_stops_delivering_when_stopped(
    rogue_grant: Sandbox,
) -> None:
    cloudtrail = rogue_grant.session().client("cloudtrail")
    (trail,) = cloudtrail.describe_trails()["trailList"]
    assert trail["Name"] == recorder.TRAIL_NAME
    assert trail["S3BucketName"] == rogue_grant.trail_bucket
    assert trail["IsMultiRegionTrail"] and trail["LogFileValidationEnabled"]
    assert cloudtrail.get_trail_status(Name=recorder.TRAIL_NAME)["IsLogging"]
    s3 = rogue_grant.session().client("s3")
    files = len(s3.list_objects_v2(Bucket=rogue_grant.trail_bucket)["Contents"])
    cloudtrail.stop_logging(Name=recorder.TRAIL_NAME)
    rogue_grant.session().client("kms").disable_key(KeyId=rogue_grant.keys["payments"]["id"])
    # the event history still has both; the trail delivered its own StopLogging, as AWS's
    # trails do, and nothing after it
    (disabled,) = events_named(rogue_grant, "DisableKey")
    (stopped,) = events_named(rogue_grant, "StopLogging")
    assert trail_file_records(rogue_grant, stopped) == [stopped]
    assert len(s3.list_objects_v2(Bucket=rogue_grant.trail_bucket)["Contents"]) == files + 1
    assert not delivered(rogue_grant, rogue_grant.trail_bucket, disabled)
    # started again: the StartLogging is in the trail it starts (the CloudTrail user guide's
    # log record example is a StartLogging, https://docs.aws.amazon.com/awscloudtrail/latest/
    # userguide/cloudtrail-event-reference.html); deleted: the DeleteTrail is in it too
    cloudtrail.start_logging(Name=recorder.TRAIL_NAME)
    (started,) = events_named(rogue_grant, "StartLogging")
    assert trail_file_records(rogue_grant, started) == [started]
    cloudtrail.delete_trail(Name=recorder.TRAIL_NAME)
    (deleted,) = events_named(rogue_grant, "DeleteTrail")
    assert trail_file_records(rogue_grant, deleted) == [deleted]
    rogue_grant.session().client("kms").enable_key(KeyId=rogue_grant.keys["payments"]["id"])
    (enabled,) = events_named(rogue_grant, "EnableKey")
    assert not delivered(rogue_grant, rogue_grant.trail_bucket, enabled)


def test_a_scenario_with_trails_of_its_own_keeps_them_and_they_deliver() -> None:
    with Sandbox(scenarios.load("posture-drift")) as sandbox:
        session = sandbox.session()
        trails = {t["Name"]: t for t in session.client("cloudtrail").describe_trails()["trailList"]}
        assert set(trails) == {"org-baseline", "pci-audit"} and sandbox.trail_name is None
        history = sandbox.session().client("s3").list_objects_v2(Bucket=sandbox.trail_bucket)
        key = next(iter(sandbox.keys.values()))
        session.client("kms").disable_key(KeyId=key["id"])
        session.client("iam").create_user(UserName="break-glass")
        session.client("kms", region_name="us-east-1").create_key(Description="elsewhere")
        (disabled,) = events_named(sandbox, "DisableKey")
        (user,) = [
            e
            for e in lookup.history(sandbox.account, "us-east-1")
            if e["eventName"] == "CreateUser"
        ]
        (created,) = [
            e
            for e in lookup.history(sandbox.account, "us-east-1")
            if e["eventName"] == "CreateKey" and e["sourceIPAddress"] == "127.0.0.1"
        ]
        org, pci = trails["org-baseline"]["S3BucketName"], trails["pci-audit"]["S3BucketName"]
        # org-baseline: multi-Region, global events, but KMS excluded from its selectors
        assert not delivered(sandbox, org, disabled) and not delivered(sandbox, org, created)
        assert delivered(sandbox, org, user)
        # pci-audit: this Region only (no IAM, no us-east-1), KMS included
        assert delivered(sandbox, pci, disabled)
        assert not delivered(sandbox, pci, user) and not delivered(sandbox, pci, created)
        # the history bucket keeps the scenario's history: no trail delivers to it
        after = sandbox.session().client("s3").list_objects_v2(Bucket=sandbox.trail_bucket)
        assert after.get("Contents") == history.get("Contents")


def test_delivery_follows_each_trails_prefix_region_and_selectors(rogue_grant: Sandbox) -> None:
    session = rogue_grant.session()
    s3, cloudtrail = session.client("s3"), session.client("cloudtrail")
    location = {"LocationConstraint": rogue_grant.region}
    for name in ("audit-writes", "audit-kms"):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration=location)
    # writes only, this Region only, under a key prefix
    cloudtrail.create_trail(Name="writes", S3BucketName="audit-writes", S3KeyPrefix="team/ct")
    cloudtrail.put_event_selectors(
        TrailName="writes",
        EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}],
    )
    cloudtrail.start_logging(Name="writes")
    # advanced selectors: KMS's management events only
    cloudtrail.create_trail(Name="kms-only", S3BucketName="audit-kms", IsMultiRegionTrail=True)
    fields = [
        {"Field": "eventCategory", "Equals": ["Management"]},
        {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
    ]
    cloudtrail.put_event_selectors(
        TrailName="kms-only", AdvancedEventSelectors=[{"Name": "kms", "FieldSelectors": fields}]
    )
    cloudtrail.start_logging(Name="kms-only")
    kms = session.client("kms")
    key = rogue_grant.keys["payments"]
    kms.encrypt(KeyId=key["id"], Plaintext=b"x")
    kms.disable_key(KeyId=key["id"])
    session.client("iam").create_user(UserName="break-glass")
    (encrypted,) = own_events(rogue_grant, "Encrypt")
    (disabled,) = events_named(rogue_grant, "DisableKey")
    (user,) = [
        e
        for e in lookup.history(rogue_grant.account, "us-east-1")
        if e["eventName"] == "CreateUser"
    ]
    (written,) = delivered(rogue_grant, "audit-writes", disabled)
    assert written.startswith(f"team/ct/AWSLogs/{rogue_grant.account}/CloudTrail/eu-west-1/")
    assert not delivered(rogue_grant, "audit-writes", encrypted)  # a read: WriteOnly
    assert not delivered(rogue_grant, "audit-writes", user)  # us-east-1: not this Region
    assert delivered(rogue_grant, "audit-kms", disabled)
    assert delivered(rogue_grant, "audit-kms", encrypted)
    assert not delivered(rogue_grant, "audit-kms", user)  # not KMS
    # the sandbox's own trail (multi-Region, all management events) has all three
    for event in (encrypted, disabled, user):
        assert delivered(rogue_grant, rogue_grant.trail_bucket, event)


def test_recording_leaves_motos_random_sequence_alone() -> None:
    """A versioned trail bucket gives each file a version id: not from moto's seeded generator,
    so a key made after a recorded call gets the id it gets when that call is not recorded."""

    def next_key(recording: bool) -> tuple[str, list[str]]:
        with Sandbox(scenarios.load("rogue-grant")) as sandbox:
            s3 = sandbox.session().client("s3")
            s3.put_bucket_versioning(
                Bucket=sandbox.trail_bucket, VersioningConfiguration={"Status": "Enabled"}
            )
            if not recording:
                assert sandbox.trail is not None
                recorder.detach(sandbox.trail)
            kms = sandbox.session().client("kms")
            kms.disable_key(KeyId=sandbox.keys["payments"]["id"])
            made = str(kms.create_key(Description="after")["KeyMetadata"]["KeyId"])
            versions = s3.list_object_versions(Bucket=sandbox.trail_bucket).get("Versions", [])
            return made, [str(v["VersionId"]) for v in versions if v["IsLatest"]]

    recorded_key, versions = next_key(True)
    unrecorded_key, _ = next_key(False)
    assert recorded_key == unrecorded_key
    assert versions and "null" not in versions[-1:]  # versioned: ids were drawn
