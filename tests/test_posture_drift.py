"""The posture-drift scenario: the tabletop of the preparation phase.

``kmsir audit --sandbox posture-drift`` runs the kms-posture-review playbook in the scenario's
sandbox; the scenario lists what it plants (``planted:``). The review must report every
planted problem, and nothing else as a failure: a failure no plant explains is a false
failure (or a plant the scenario forgot to list). Also: the scenario fields the review needs
(key specs and origins, rotation periods, grant constraints, unencrypted and tagged
resources, secrets' rotation, IAM, trails, rules, EBS defaults, a CloudFormation stack) seed
moto as AWS would hold them, and the scenarios that do not use them keep their fingerprint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kmsir import report
from kmsir.errors import PlaybookError
from kmsir.evidence.manifest import Bundle
from kmsir.posture import Review
from kmsir.run.engine import RunResult
from kmsir.sandbox import Sandbox, posture_seed
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .conftest import played

SCENARIO = "posture-drift"
OLD = Path(__file__).resolve().parent / "data" / "old-release"

#: The review's check ids of practices 1-8 (fixed: waivers and comparisons key on them).
CHECK_IDS = {
    "aws-managed-keys-in-use", "sensitive-data-on-customer-keys",
    "key-policy-public", "key-policy-admin-wildcard", "key-policy-cross-account",
    "key-policy-grant-unrestricted", "iam-kms-wildcard-resource", "grant-cross-account",
    "grant-age", "grant-broad",
    "trail-multi-region-kms", "trail-log-validation", "trail-bucket-not-public",
    "kms-change-alarms", "kms-pending-deletion-use-alarm",
    "rotation-enabled", "rotation-period", "rotation-manual",
    "ebs-encryption-by-default", "ebs-default-key", "ebs-volumes-encrypted",
    "s3-default-encryption", "rds-encrypted", "dynamodb-encryption",
    "secrets-rotation", "secrets-customer-keys",
    "key-origin-recorded", "imported-material-expiry", "key-store-connected",
    "keys-managed-as-code", "cloudformation-drift",
}  # fmt: skip


@dataclass
class Reviewed:
    """The review of the scenario, with what its sandbox held while it ran."""

    result: RunResult
    review: Review
    plants: list[posture_seed.Plant]
    #: name -> ARN of the scenario's keys and resources
    arns: dict[str, str]
    #: what moto held, read after the review (which changes nothing)
    seen: dict[str, Any]


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Reviewed:
    """The posture review run on the scenario as ``kmsir audit --sandbox posture-drift``
    runs it: the kms-posture-review playbook, the scenario's inputs, in its sandbox."""
    with played(SCENARIO, tmp_path_factory.mktemp("ev")) as (sandbox, result):
        plants = posture_seed.planted(sandbox)
        arns = {**{k: str(v["arn"]) for k, v in sandbox.keys.items()}, **sandbox.resources}
        seen = _seen(sandbox)
    view = Bundle.open(result.bundle).view
    posture = view.steps["review"].outputs["posture"]
    review = Review.loads((result.bundle / posture).read_bytes())
    return Reviewed(result, review, plants, arns, seen)


def _seen(sandbox: Sandbox) -> dict[str, Any]:
    """What the seeded world holds that the review judges, read from moto."""
    session = sandbox.session()
    kms, ec2 = session.client("kms"), session.client("ec2")
    keys = {
        name: kms.describe_key(KeyId=key["id"])["KeyMetadata"] for name, key in sandbox.keys.items()
    }
    rotation = {
        name: kms.get_key_rotation_status(KeyId=sandbox.keys[name]["id"])
        for name in ("cardholder", "legacy", "analytics")
    }
    stack_key = sandbox.resources["ledger-events-kms"]
    volumes = {
        tag["Value"]: volume
        for volume in ec2.describe_volumes()["Volumes"]
        for tag in volume.get("Tags", [])
        if tag["Key"] == "Name"
    }
    cloudtrail = session.client("cloudtrail")
    trails = {t["Name"]: t for t in cloudtrail.describe_trails()["trailList"]}
    secrets = session.client("secretsmanager")
    return {
        "keys": keys,
        "rotation": rotation,
        "grants": {
            g["Name"]: g
            for key in sandbox.keys.values()
            for g in kms.list_grants(KeyId=key["id"])["Grants"]
        },
        "aws_ebs": kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"],
        "stack_key": kms.describe_key(KeyId=stack_key)["KeyMetadata"],
        "stack_key_tags": {
            t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=stack_key)["Tags"]
        },
        "stack_key_rotation": kms.get_key_rotation_status(KeyId=stack_key),
        "volumes": volumes,
        "ebs_default": ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"],
        "trails": trails,
        "selectors": {
            name: cloudtrail.get_event_selectors(TrailName=name)["EventSelectors"]
            for name in trails
        },
        "logging": {name: cloudtrail.get_trail_status(Name=name)["IsLogging"] for name in trails},
        "rds": {
            d["DBInstanceIdentifier"]: d
            for d in session.client("rds").describe_db_instances()["DBInstances"]
        },
        "secrets": {
            name: secrets.describe_secret(SecretId=name)
            for name in ("prod/payments/tokeniser-db", "prod/payments/acquirer-api-key")
        },
        "inline": session.client("iam").get_role_policy(
            RoleName="support-tooling", PolicyName="kms-troubleshooting"
        )["PolicyDocument"],
        "rules": session.client("events").list_rules()["Rules"],
    }


def _failures(review: Review) -> list[tuple[str, str]]:
    return [pair for c in review.checks if c.status == "fail" for pair in c.pairs()]


# -- the review against what is planted ------------------------------------------------------


def test_the_scenario_plants_only_checks_the_review_has() -> None:
    world = scenarios.load(SCENARIO)
    assert world.playbook == "kms-posture-review"
    unknown = {p.check for p in world.planted} - CHECK_IDS
    assert unknown == set()
    planted = {p.check for p in world.planted}
    # each of practices 1-7 has something planted; 8 only records facts (info)
    assert {"sensitive-data-on-customer-keys", "rotation-enabled", "secrets-rotation"} <= planted
    assert {"key-policy-public", "trail-log-validation", "ebs-encryption-by-default"} <= planted


def test_the_review_reports_every_planted_problem_and_no_false_failure(
    reviewed: Reviewed,
) -> None:
    missed, unplanted = posture_seed.compare(reviewed.plants, _failures(reviewed.review))
    names = {v: k for k, v in reviewed.arns.items()}
    assert [f"{p.check} on {p.name or 'the account'}" for p in missed] == []
    assert [f"{c} on {names.get(r, r)}" for c, r in unplanted] == []


def test_the_review_step_succeeds_and_its_report_names_the_planted_problems(
    reviewed: Reviewed,
) -> None:
    assert reviewed.result.status == "succeeded"
    (step,) = reviewed.result.steps
    assert step.status == "succeeded"
    assert reviewed.review.scope["simulated"] is True
    assert reviewed.review.scope["account"] == "123456789012"
    text = report.render(reviewed.result.bundle, fmt="md")
    absent = [
        f"{p.check} {p.arn or ''}"
        for p in reviewed.plants
        if p.check not in text or (p.arn is not None and p.arn.split("#")[0] not in text)
    ]
    assert absent == []


def test_what_cannot_fail_is_recorded_for_the_tabletop(reviewed: Reviewed) -> None:
    """Practices 4, 7 and 8 record facts (info) about the keys planted for them: the
    asymmetric, HMAC, imported and key-store keys rotate by hand; the origin of the imported
    and key-store keys; the key the CloudFormation stack made is managed as code."""

    def named(check: str, statuses: set[str]) -> set[str]:
        return {
            r
            for c in reviewed.review.checks
            if c.id == check and c.status in statuses
            for r in c.resources
        }

    arns = reviewed.arns
    imported = {arns["hsm-import"], arns["card-issuing"], arns["hsm-vault"]}
    assert named("rotation-manual", {"info"}) == {arns["signing"], arns["request-mac"], *imported}
    assert named("key-origin-recorded", {"info"}) == imported
    assert arns["ledger-events-kms"] in named("keys-managed-as-code", {"info", "pass"})


def test_a_planted_problem_is_named_by_the_arn_the_sandbox_gave_it(reviewed: Reviewed) -> None:
    plants = {(p.check, p.name): p for p in reviewed.plants}
    volume = reviewed.seen["volumes"]["reconciliation-worker scratch"]["VolumeId"]
    assert plants["ebs-volumes-encrypted", "reconciliation-worker scratch"].arn == (
        f"arn:aws:ec2:eu-west-1:123456789012:volume/{volume}"
    )
    inline = plants["iam-kms-wildcard-resource", "support-tooling#policy/kms-troubleshooting"]
    assert inline.arn == "arn:aws:iam::123456789012:role/support-tooling#policy/kms-troubleshooting"
    grant = plants["grant-age", "old-migration"]
    legacy = reviewed.arns["legacy"]
    assert grant.arn == legacy and grant.grant_id is not None
    # a grant is reported on its key (with its id, or not); another key's failure is not it
    assert grant.covers("grant-age", legacy)
    assert grant.covers("grant-age", f"{legacy}#grant/{grant.grant_id}")
    assert not grant.covers("grant-age", reviewed.arns["analytics"])
    assert not grant.covers("grant-broad", legacy)
    # an unencrypted instance's automated snapshots (AWS names them by the hour) are too
    database = plants["rds-encrypted", "marketing-analytics"]
    snapshot = database.arn.replace(":db:", ":snapshot:rds:") + "-2026-12-01-04-10"
    assert database.covers("rds-encrypted", snapshot)
    assert not database.covers("rds-encrypted", snapshot.replace("marketing", "ledger"))
    # an alarm setting is named as the review names it: the missing ScheduleKeyDeletion
    # alarm, not the DisableKey one the scenario did set up
    alarm = plants["kms-change-alarms", "alarm-on/ScheduleKeyDeletion"]
    assert alarm.arn == "arn:aws:kms:eu-west-1:123456789012:alarm-on/ScheduleKeyDeletion"
    assert not alarm.covers("kms-change-alarms", alarm.arn.replace("Schedule", "Disable"))
    # each trail short of KMS events is its own plant
    assert plants["trail-multi-region-kms", "pci-audit"].arn == (
        "arn:aws:cloudtrail:eu-west-1:123456789012:trail/pci-audit"
    )


# -- the new scenario fields, as moto holds them ---------------------------------------------


def test_keys_have_their_spec_origin_and_rotation_period(reviewed: Reviewed) -> None:
    keys, rotation = reviewed.seen["keys"], reviewed.seen["rotation"]
    assert (keys["signing"]["KeySpec"], keys["signing"]["KeyUsage"]) == (
        "ECC_NIST_P256",
        "SIGN_VERIFY",
    )
    assert (keys["request-mac"]["KeySpec"], keys["request-mac"]["KeyUsage"]) == (
        "HMAC_256",
        "GENERATE_VERIFY_MAC",
    )
    assert keys["hsm-import"]["Origin"] == "EXTERNAL"
    assert keys["cardholder"]["Origin"] == "AWS_KMS"
    assert rotation["cardholder"]["RotationPeriodInDays"] == 90
    assert rotation["analytics"]["RotationPeriodInDays"] == 365  # AWS's default
    assert rotation["legacy"]["KeyRotationEnabled"] is False


def test_grants_keep_their_constraints_and_age(reviewed: Reviewed) -> None:
    grants = reviewed.seen["grants"]
    assert grants["northbank-settlement-sync"]["Constraints"] == {
        "EncryptionContextSubset": {"acquirer": "northbank"}
    }
    assert "Constraints" not in grants["glue-etl"]
    old = grants["report-migration-2023"]["CreationDate"]  # 820 days ago, the other 40
    assert (grants["tokenisation-service"]["CreationDate"] - old).days == 780


def test_resources_are_unencrypted_tagged_and_rotated_as_the_scenario_says(
    reviewed: Reviewed,
) -> None:
    seen = reviewed.seen
    scratch = seen["volumes"]["reconciliation-worker scratch"]
    assert scratch["Encrypted"] is False and "KmsKeyId" not in scratch
    assert {"Key": "data-classification", "Value": "restricted"} in scratch["Tags"]
    archive = seen["volumes"]["chargeback-archive data volume"]
    assert archive["KmsKeyId"] == seen["aws_ebs"]["Arn"]
    assert seen["aws_ebs"]["KeyManager"] == "AWS"  # alias/aws/ebs, AWS-managed
    assert seen["ebs_default"] is False
    assert seen["rds"]["marketing-analytics"]["StorageEncrypted"] is False
    assert seen["rds"]["ledger-db"]["KmsKeyId"] == reviewed.arns["ledger"]
    stale = seen["secrets"]["prod/payments/tokeniser-db"]
    assert stale["RotationEnabled"] is True
    assert stale["RotationRules"]["AutomaticallyAfterDays"] == 30
    assert (stale["NextRotationDate"] - stale["LastRotatedDate"]).days == 30
    assert (datetime.now(timezone.utc) - stale["LastRotatedDate"]).days == 97
    never = seen["secrets"]["prod/payments/acquirer-api-key"]
    assert "RotationEnabled" not in never and "KmsKeyId" not in never  # on aws/secretsmanager


def test_iam_trails_rules_and_the_stack_are_seeded(reviewed: Reviewed) -> None:
    seen = reviewed.seen
    assert seen["inline"]["Statement"][0] == {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
    org, pci = seen["trails"]["org-baseline"], seen["trails"]["pci-audit"]
    assert org["IsMultiRegionTrail"] and org["LogFileValidationEnabled"]
    assert seen["selectors"]["org-baseline"][0]["ExcludeManagementEventSources"] == [
        "kms.amazonaws.com"
    ]
    assert not pci["IsMultiRegionTrail"] and not pci["LogFileValidationEnabled"]
    assert seen["logging"] == {"org-baseline": True, "pci-audit": True}
    (rule,) = seen["rules"]
    assert json.loads(rule["EventPattern"])["detail"]["eventName"] == ["PutKeyPolicy", "DisableKey"]
    key, tags = seen["stack_key"], seen["stack_key_tags"]
    assert key["Arn"] == reviewed.arns["ledger-events-kms"] and key["KeyManager"] == "CUSTOMER"
    # CloudFormation propagates the stack's tags and its own to the key
    assert tags["aws:cloudformation:stack-name"] == "ledger-events-kms"
    assert tags["aws:cloudformation:logical-id"] == posture_seed.STACK_KEY
    assert tags["aws:cloudformation:stack-id"].startswith(
        "arn:aws:cloudformation:eu-west-1:123456789012:stack/ledger-events-kms/"
    )
    assert tags["owner"] == "ledger-team"
    assert seen["stack_key_rotation"]["RotationPeriodInDays"] == 90


def test_a_public_trail_bucket_a_stopped_trail_and_ebs_encryption_on() -> None:
    """The options posture-drift leaves at their default, in a scenario of their own."""
    world = Scenario.model_validate(
        {
            "id": "options",
            "title": "t",
            "story": "s",
            "playbook": SCENARIO,
            "keys": {"k": {"rotation": True}},
            "resources": [
                {"kind": "ebs-volume", "name": "old", "encrypted": False},
                {"kind": "ebs-encryption-default", "enabled": True, "key": "k"},
                {"kind": "trail", "name": "open", "public_bucket": True, "logging": False},
                {"kind": "event-rule", "name": "quiet", "pattern": {"source": ["aws.kms"]},
                 "enabled": False, "topic": None},
                {"kind": "rds-snapshot", "name": "kept", "tags": {"team": "x"}},
            ],
        }
    )  # fmt: skip
    with Sandbox(world) as sandbox:
        session = sandbox.session()
        ec2, s3 = session.client("ec2"), session.client("s3")
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
        (volume,) = ec2.describe_volumes()["Volumes"]
        assert volume["Encrypted"] is False  # made before encryption by default was on
        bucket = "aws-cloudtrail-logs-123456789012-open"
        assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
        trail = session.client("cloudtrail").get_trail_status(Name="open")
        assert trail["IsLogging"] is False
        events = session.client("events")
        assert events.describe_rule(Name="quiet")["State"] == "DISABLED"
        assert events.list_targets_by_rule(Rule="quiet")["Targets"] == []
        rds = session.client("rds")
        (snapshot,) = rds.describe_db_snapshots()["DBSnapshots"]
        assert snapshot["DBSnapshotArn"] == sandbox.resources["kept"]
        # encrypted without a key: on aws/rds, reported by ARN as AWS does
        managed = session.client("kms").describe_key(KeyId="alias/aws/rds")["KeyMetadata"]
        assert snapshot["KmsKeyId"] == managed["Arn"] and managed["KeyManager"] == "AWS"
        assert sandbox.resources["ebs-encryption-by-default"] == (
            "arn:aws:ec2:eu-west-1:123456789012:ebs-encryption-by-default"
        )


# -- what a scenario may not say -------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    world = scenarios.load(SCENARIO).model_dump(mode="json")
    world.update(changes)
    return world


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keys": {"k": {"spec": "ECC_NIST_P256", "usage": "ENCRYPT_DECRYPT"}}}, "is for SIGN"),
        ({"keys": {"k": {"spec": "HMAC_256", "rotation": True}}}, "AWS rotates only symmetric"),
        ({"keys": {"k": {"origin": "EXTERNAL", "rotation": True}}}, "key material from KMS"),
        ({"keys": {"k": {"rotation_period_days": 90}}}, "needs rotation: true"),
        ({"keys": {"k": {"rotation": True, "rotation_period_days": 30}}}, "greater than or equal"),
        ({"resources": [{"kind": "s3-bucket", "name": "b", "encrypted": False}]}, "AWS encrypts"),
        ({"resources": [{"kind": "secret", "name": "s", "last_rotated": "-3d"}]}, "needs rotation"),
        ({"resources": [{"kind": "iam-policy", "name": "p", "document": {}, "roles": ["r"]}]},
         "no iam-role resource listed before it"),
        ({"resources": [{"kind": "s3-bucket", "name": "b", "tags": {"aws:x": "y"}}]}, "reserved"),
        ({"planted": [{"check": "rotation-enabled", "resource": "nothing"}]}, "is no key"),
        ({"planted": [{"check": "grant-age", "resource": "ledger#policy/x"}]}, "only an iam-role"),
    ],
)  # fmt: skip
def test_a_scenario_field_that_does_not_fit_is_refused(
    change: dict[str, Any], message: str
) -> None:
    world = _with(**change)
    if "keys" not in change:
        world["grants"], world["planted"] = {}, change.get("planted", [])
    else:
        world.update(grants={}, resources=[], planted=[])
    with pytest.raises(ValidationError, match=message):
        Scenario.model_validate(world)


def test_a_broken_template_in_a_resource_is_refused_when_the_scenario_loads(
    tmp_path: Path,
) -> None:
    source = (scenarios.scenario_dir() / f"{SCENARIO}.yaml").read_text()
    broken = source.replace("{{ keys.ledger.arn }}", "{{ keys.ledgr.arn }}")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    with pytest.raises(PlaybookError, match=r"resources\.\d+\.document.*ledgr") as refused:
        scenarios.load(str(path))
    assert str(path) in str(refused.value)


# -- the scenarios that do not use the new fields --------------------------------------------


def test_the_old_release_scenario_keeps_the_fingerprint_its_run_recorded() -> None:
    journal = (OLD / "sandbox" / "journal.jsonl").read_text()
    recorded = re.search(r'"scenario_sha256":"([0-9a-f]{64})"', journal)
    assert recorded is not None
    old = scenarios.load(str(OLD / "scenarios" / "rogue-grant.yaml"))
    assert Sandbox(old).fingerprint == recorded.group(1)


#: The scenarios written for these fields (imported material has an origin).
USING_THEM = {SCENARIO, "imported-material-deleted"}


@pytest.mark.parametrize("name", sorted(set(scenarios.available()) - USING_THEM))
def test_a_scenario_without_the_new_fields_dumps_none_of_them(name: str) -> None:
    dumped = scenarios.load(name).model_dump(mode="json")
    assert "planted" not in dumped
    for key in dumped["keys"].values():
        assert not {"spec", "usage", "origin", "rotation_period_days"} & set(key)
    for grant in dumped["grants"].values():
        assert "constraints" not in grant
    for resource in dumped.get("resources", []):
        assert set(resource) == {"kind", "name", "key", "key_reference"}


def test_a_planted_alarm_setting_must_be_one_the_review_judges() -> None:
    from kmsir.sandbox.resource_model import planted_problem

    assert planted_problem("alarm-on/PutKeyPolicy", [], [], []) == ""
    problem = planted_problem("alarm-on/CreateKey", [], [], [])
    assert "alarm-on/CreateKey" in problem and "ScheduleKeyDeletion" in problem
