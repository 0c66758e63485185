"""kms.audit's checks of practices 4 (rotation), 7 (key stores and origin) and 8 (keys as
code), against moto.

The keys are read as the action reads them (``gather``), then only these practices' rules
run. Where moto lacks what AWS gives, the test says so and cites AWS's page:
- moto drops ``RotationPeriodInDays``; the sandbox's KMS shim keeps it as AWS does
  (https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyRotationStatus.html), so the
  rotation tests install it, as every sandbox does;
- moto imports no key material (no GetParametersForImport/ImportKeyMaterial) and leaves an
  EXTERNAL key Enabled with no ``ExpirationModel``; AWS keeps it PendingImport until material
  is imported (https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-import-key-material.html).
  The expiry verdicts are tested on EXTERNAL keys given the ``ValidTo`` and
  ``ExpirationModel`` AWS would report;
- moto has no custom key stores: the origin tests install the sandbox's KMS emulator, which
  has them as AWS does (CreateCustomKeyStore, DescribeCustomKeyStores...);
- moto has no drift detection, and gives CloudFormation-made keys
  none of the ``aws:cloudformation:*`` tags AWS adds
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-resource-tags.html).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto.core import enable_iam_authentication

from kmsir.actions.audit import AuditParams
from kmsir.actions.audit.context import AuditContext, KeyFacts, gather
from kmsir.actions.audit.keysets import day
from kmsir.actions.audit.practice_automation import STACK_ID_TAG, STACK_NAME_TAG
from kmsir.actions.audit.practice_keys import AUTOMATION, ORIGIN, ROTATION
from kmsir.actions.audit.rules import Rule, evaluate
from kmsir.aws import ClientFactory
from kmsir.posture import Check

from .fakes import context

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ROOT_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


@pytest.fixture
def aws_rotation() -> None:
    """The sandbox's KMS fidelity shim: rotation periods kept and reported as AWS does, and
    key policies' explicit Deny enforced (installed for good, as every sandbox does)."""
    from kmsir.sandbox import shim

    shim.install()


@pytest.fixture
def kms_emulator() -> None:
    """The sandbox's KMS emulator: imported material and custom key stores as AWS has them
    (installed for good, as every sandbox does)."""
    from kmsir.sandbox import shim

    shim.install()


def kms() -> Any:
    return boto3.client("kms", region_name=REGION)


def key(**kwargs: Any) -> dict[str, Any]:
    return dict(kms().create_key(**kwargs)["KeyMetadata"])


def review(
    clients: ClientFactory,
    rules: tuple[Rule, ...],
    change: Callable[[AuditContext], None] | None = None,
    **settings: Any,
) -> tuple[list[Check], list[str]]:
    """The rules' checks over every key of the Region, and the operations called. ``change``
    may alter the reading first (what AWS gives and moto cannot)."""
    ctx, calls = context(clients)
    audit = AuditContext(
        ctx=ctx, region=REGION, account=ACCOUNT, settings=AuditParams(all=True, **settings)
    )
    gather(audit, None)
    if change is not None:
        change(audit)
    checks = evaluate(audit, rules)
    return checks, [c.operation for c in calls]


def lacking(action: str) -> ClientFactory:
    """Clients of a role allowed everything but ``action`` (``NotAction``); run the review
    inside ``enable_iam_authentication()`` for moto to enforce it."""
    iam = boto3.client("iam", region_name=REGION)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    name = "review-" + action.replace(":", "-")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    allowed = {"Effect": "Allow", "NotAction": action, "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [allowed]}
    iam.put_role_policy(RoleName=name, PolicyName="review", PolicyDocument=json.dumps(policy))
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role["Arn"], RoleSessionName="review"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
    return ClientFactory(session_factory=lambda: session, region=REGION, guard_send=True)


def of(checks: list[Check], check_id: str, status: str | None = None) -> list[Check]:
    return [c for c in checks if c.id == check_id and status in (None, c.status)]


def one(checks: list[Check], check_id: str, status: str) -> Check:
    (found,) = of(checks, check_id, status)
    return found


def facts(audit: AuditContext, arn: str) -> KeyFacts:
    (found,) = (k for k in audit.keys if k.arn == arn)
    return found


class Answering:
    """A boto3 client with some operations answered as AWS would where moto cannot; every
    other operation goes to moto. Starting drift detection is refused outright: the review
    must stay read-only."""

    def __init__(self, real: Any, **answers: Callable[..., Any]) -> None:
        self._real = real
        self._answers = answers

    def __getattr__(self, name: str) -> Any:
        if name == "detect_stack_drift":
            raise AssertionError("the review started drift detection")
        return self._answers.get(name) or getattr(self._real, name)

    def get_paginator(self, name: str) -> Any:
        if name in self._answers:
            answer = self._answers[name]
            return SimpleNamespace(paginate=lambda **kw: iter([answer(**kw)]))
        return self._real.get_paginator(name)


def answering(service: str, **answers: Callable[..., Any]) -> Callable[[AuditContext], None]:
    """A ``change`` giving the review a ``service`` client that answers ``answers``."""

    def change(audit: AuditContext) -> None:
        real = audit.client

        def client(name: str) -> Any:
            found = real(name)
            return Answering(found, **answers) if name == service else found

        audit.client = client

    return change


# -- practice 4: rotation ------------------------------------------------------------------


@pytest.mark.usefixtures("aws_rotation")
def test_rotation_every_90_days_passes_off_fails_and_365_days_fails_the_period(
    moto_clients: ClientFactory,
) -> None:
    quarterly, off, yearly = key(), key(), key()
    kms().enable_key_rotation(KeyId=quarterly["KeyId"], RotationPeriodInDays=90)
    kms().enable_key_rotation(KeyId=yearly["KeyId"], RotationPeriodInDays=365)
    kms().rotate_key_on_demand(KeyId=quarterly["KeyId"])

    checks, calls = review(moto_clients, ROTATION)

    failed = one(checks, "rotation-enabled", "fail")
    assert failed.resources == (off["Arn"],)
    assert failed.practice == 4 and failed.severity == "medium"
    passed = one(checks, "rotation-enabled", "pass")
    assert set(passed.resources) == {quarterly["Arn"], yearly["Arn"]}

    too_long = one(checks, "rotation-period", "fail")
    assert too_long.resources == (yearly["Arn"],)
    assert too_long.practice == 4 and too_long.severity == "low"
    next_yearly = kms().get_key_rotation_status(KeyId=yearly["KeyId"])["NextRotationDate"]
    assert "every 365 days" in too_long.detail
    assert f"last rotation never, next {day(next_yearly)}" in too_long.detail
    short = one(checks, "rotation-period", "pass")
    assert short.resources == (quarterly["Arn"],)
    (rotated,) = kms().list_key_rotations(KeyId=quarterly["KeyId"])["Rotations"]
    next_quarterly = kms().get_key_rotation_status(KeyId=quarterly["KeyId"])["NextRotationDate"]
    assert f"last rotation {day(rotated['RotationDate'])}, next {day(next_quarterly)}" in (
        short.detail
    )
    assert calls.count("ListKeyRotations") == 2  # the keys that rotate, not the one that does not
    assert not of(checks, "rotation-manual", "info")
    assert short.doc.startswith("https://docs.aws.amazon.com/kms/latest/developerguide/rotate-keys")


@pytest.mark.usefixtures("aws_rotation")
def test_a_response_without_rotation_period_cannot_be_judged_not_failed(
    moto_clients: ClientFactory,
) -> None:
    """GetKeyRotationStatus answered without RotationPeriodInDays (before AWS added it in
    2024, or plain moto): the period is could-not-check, never a fail."""
    rotating = key()
    kms().enable_key_rotation(KeyId=rotating["KeyId"], RotationPeriodInDays=365)

    def older_api(audit: AuditContext) -> None:
        status = facts(audit, rotating["Arn"]).rotation
        assert status is not None
        del status["RotationPeriodInDays"], status["NextRotationDate"]

    checks, _ = review(moto_clients, ROTATION, older_api)

    unknown = one(checks, "rotation-period", "could-not-check")
    assert unknown.resources == (rotating["Arn"],)
    assert unknown.missing is not None and "RotationPeriodInDays" in unknown.missing
    assert not of(checks, "rotation-period", "fail")
    assert one(checks, "rotation-enabled", "pass").resources == (rotating["Arn"],)


@pytest.mark.usefixtures("aws_rotation")
def test_a_refused_rotation_status_is_could_not_check_and_hides_no_other_key(
    moto_clients: ClientFactory,
) -> None:
    """A key policy denying kms:GetKeyRotationStatus to everyone: that key cannot be judged;
    the other key still fails."""
    denying = {
        **ROOT_ONLY,
        "Statement": [
            *ROOT_ONLY["Statement"],
            {
                "Sid": "No rotation status",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:GetKeyRotationStatus",
                "Resource": "*",
            },
        ],
    }
    hidden, off = key(Policy=json.dumps(denying)), key()

    checks, _ = review(moto_clients, ROTATION)

    refused = one(checks, "rotation-enabled", "could-not-check")
    assert refused.resources == (hidden["Arn"],)
    assert refused.missing == "kms:GetKeyRotationStatus"
    assert one(checks, "rotation-enabled", "fail").resources == (off["Arn"],)
    assert one(checks, "rotation-period", "could-not-check").resources == (hidden["Arn"],)


@pytest.mark.usefixtures("aws_rotation")
def test_a_role_without_list_key_rotations_still_judges_the_period(
    moto_clients: ClientFactory,
) -> None:
    yearly = key()
    kms().enable_key_rotation(KeyId=yearly["KeyId"], RotationPeriodInDays=365)
    clients = lacking("kms:ListKeyRotations")

    with enable_iam_authentication():
        checks, _ = review(clients, ROTATION)

    failed = one(checks, "rotation-period", "fail")
    assert failed.resources == (yearly["Arn"],)
    assert "last rotation unknown (kms:ListKeyRotations refused)" in failed.detail


@pytest.mark.usefixtures("aws_rotation")
def test_keys_pending_deletion_are_left_aside_and_said(moto_clients: ClientFactory) -> None:
    leaving, off = key(), key()
    kms().schedule_key_deletion(KeyId=leaving["KeyId"], PendingWindowInDays=7)

    checks, _ = review(moto_clients, ROTATION)

    failed = one(checks, "rotation-enabled", "fail")
    assert failed.resources == (off["Arn"],)
    assert "1 key(s) pending deletion not judged" in failed.detail


def test_keys_that_cannot_rotate_automatically_are_listed_with_the_manual_procedure(
    moto_clients: ClientFactory,
) -> None:
    signing = key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    mac = key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    imported = key(Origin="EXTERNAL")
    symmetric = key()

    checks, _ = review(moto_clients, ROTATION)

    listed = {c.detail.split(" cannot")[0]: c for c in of(checks, "rotation-manual", "info")}
    assert listed["1 asymmetric key(s)"].resources == (signing["Arn"],)
    assert listed["1 HMAC key(s)"].resources == (mac["Arn"],)
    assert listed["1 key(s) with imported key material"].resources == (imported["Arn"],)
    for check in listed.values():
        assert check.practice == 4
        assert "a new key, then the alias moved to it" in check.detail
        assert "aws kms update-alias" in check.fix
        assert check.doc.endswith("/rotate-keys-manually.html")
    judged = {r for c in of(checks, "rotation-enabled") for r in c.resources}
    assert judged == {symmetric["Arn"]}


def test_rotation_manual_is_not_applicable_when_every_key_can_rotate(
    moto_clients: ClientFactory,
) -> None:
    key()

    checks, _ = review(moto_clients, ROTATION)

    (manual,) = of(checks, "rotation-manual")
    assert manual.status == "not-applicable" and manual.practice == 4


# -- practice 7: key stores and origin ------------------------------------------------------


@pytest.mark.usefixtures("kms_emulator")
def test_imported_material_and_custom_key_stores_are_recorded(
    moto_clients: ClientFactory,
) -> None:
    imported = key(Origin="EXTERNAL")
    hsm = kms().create_custom_key_store(
        CustomKeyStoreName="ExampleHSM",
        CloudHsmClusterId="cluster-1234567abcd",
        TrustAnchorCertificate="cert",
        KeyStorePassword="kmsuser-pass",
    )["CustomKeyStoreId"]
    kms().connect_custom_key_store(CustomKeyStoreId=hsm)
    in_hsm = key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=hsm)
    key()

    def not_offered(**_: Any) -> Any:
        raise NotImplementedError  # as moto in process answers an API it does not offer

    lacking = answering("kms", describe_custom_key_stores=not_offered)
    checks, _ = review(moto_clients, ORIGIN, lacking)

    recorded = one(checks, "key-origin-recorded", "info")
    assert recorded.resources == (imported["Arn"],)
    assert recorded.practice == 7
    assert "imported key material (origin EXTERNAL)" in recorded.detail
    # without DescribeCustomKeyStores (AWS names the store, its type and connection state)
    # the key in a CloudHSM key store is could-not-check
    store = one(checks, "key-origin-recorded", "could-not-check")
    assert store.resources == (in_hsm["Arn"],)
    assert store.missing == "kms:DescribeCustomKeyStores (not offered by the sandbox)"


@pytest.mark.usefixtures("kms_emulator")
def test_a_key_in_a_custom_key_store_is_recorded_with_its_store(
    moto_clients: ClientFactory,
) -> None:
    """What AWS answers (and the sandbox's emulator, not moto): DescribeKey naming the store,
    and the store listed by DescribeCustomKeyStores with its connection state."""
    xks = kms().create_custom_key_store(
        CustomKeyStoreName="ExampleXKS",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint="https://xks.example.com",
        XksProxyUriPath="/kms/xks/v1",
        XksProxyConnectivity="PUBLIC_ENDPOINT",
        XksProxyAuthenticationCredential={
            "AccessKeyId": "ABCDE12345670EXAMPLE",
            "RawSecretAccessKey": "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=",
        },
    )["CustomKeyStoreId"]
    kms().connect_custom_key_store(CustomKeyStoreId=xks)
    in_xks = key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=xks, XksKeyId="external-key-1")
    kms().disconnect_custom_key_store(CustomKeyStoreId=xks)

    checks, _ = review(moto_clients, ORIGIN)

    recorded = one(checks, "key-origin-recorded", "info")
    assert recorded.resources == (in_xks["Arn"],)
    assert f"EXTERNAL_KEY_STORE key store {xks} (ExampleXKS)" in recorded.detail
    assert "connection DISCONNECTED" in recorded.detail
    assert any(e.endswith("custom-key-stores.json") for e in recorded.evidence)


def test_origin_is_not_applicable_when_every_key_is_made_and_kept_by_kms(
    moto_clients: ClientFactory,
) -> None:
    key()
    key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")

    checks, _ = review(moto_clients, ORIGIN)

    assert [(c.id, c.status) for c in checks] == [
        ("key-origin-recorded", "not-applicable"),
        ("imported-material-expiry", "not-applicable"),
    ]


def test_imported_material_moto_cannot_describe_is_could_not_check(
    moto_clients: ClientFactory,
) -> None:
    """moto's EXTERNAL key is Enabled with no ExpirationModel: AWS never reports that (the
    key stays PendingImport until material is imported, as the sandbox's emulator has it), so
    the expiry cannot be judged."""
    imported = key(Origin="EXTERNAL")

    checks, _ = review(moto_clients, ORIGIN, material(**{imported["Arn"]: {"KeyState": "Enabled"}}))

    unknown = one(checks, "imported-material-expiry", "could-not-check")
    assert unknown.resources == (imported["Arn"],)
    assert unknown.practice == 7
    assert not of(checks, "imported-material-expiry", "fail")


def material(**by_arn: dict[str, Any]) -> Callable[[AuditContext], None]:
    """A ``change`` giving keys (by ARN) the DescribeKey fields AWS reports of imported
    material, ValidTo as days from the review's now."""

    def change(audit: AuditContext) -> None:
        for arn, fields in by_arn.items():
            found = facts(audit, arn)
            days = fields.pop("days", None)
            if days is not None:
                fields["ValidTo"] = audit.now + timedelta(days=days)
            found.metadata.update(fields)

    return change


def test_imported_material_expiring_within_30_days_fails_later_passes(
    moto_clients: ClientFactory,
) -> None:
    soon, later, lasting, lapsed = (key(Origin="EXTERNAL") for _ in range(4))
    expires = "KEY_MATERIAL_EXPIRES"
    change = material(
        **{
            soon["Arn"]: {"ExpirationModel": expires, "days": 10},
            later["Arn"]: {"ExpirationModel": expires, "days": 100},
            lasting["Arn"]: {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"},
            lapsed["Arn"]: {"ExpirationModel": expires, "days": -2, "KeyState": "PendingImport"},
        }
    )

    checks, _ = review(moto_clients, ORIGIN, change)

    failed = {c.resources[0]: c for c in of(checks, "imported-material-expiry", "fail")}
    assert set(failed) == {soon["Arn"], lapsed["Arn"]}
    assert "expires in 10 day(s)" in failed[soon["Arn"]].detail
    assert "expired on" in failed[lapsed["Arn"]].detail
    assert "PendingImport" in failed[lapsed["Arn"]].detail
    for check in failed.values():
        assert check.practice == 7 and check.severity == "high"
    passed = one(checks, "imported-material-expiry", "pass")
    assert set(passed.resources) == {later["Arn"], lasting["Arn"]}

    wider, _ = review(moto_clients, ORIGIN, change, expiry_warning_days=120)

    failed_wider = {r for c in of(wider, "imported-material-expiry", "fail") for r in c.resources}
    assert failed_wider == {soon["Arn"], later["Arn"], lapsed["Arn"]}


@pytest.mark.usefixtures("kms_emulator")
def test_material_imported_as_aws_imports_it_is_judged_by_its_valid_to(
    moto_clients: ClientFactory,
) -> None:
    """No DescribeKey field given by the test: the material is imported through the sandbox's
    emulator as AWS takes it (GetParametersForImport, then ImportKeyMaterial with ValidTo:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html), and the
    review reads the ExpirationModel and ValidTo DescribeKey reports."""
    from .test_shim_imported import import_material

    soon, later, lasting = (key(Origin="EXTERNAL") for _ in range(3))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    import_material(kms(), soon["KeyId"], os.urandom(32), ValidTo=now + timedelta(days=10))
    import_material(kms(), later["KeyId"], os.urandom(32), ValidTo=now + timedelta(days=200))
    import_material(kms(), lasting["KeyId"], os.urandom(32))  # KEY_MATERIAL_DOES_NOT_EXPIRE

    checks, _ = review(moto_clients, ORIGIN)

    failed = one(checks, "imported-material-expiry", "fail")
    assert failed.resources == (soon["Arn"],)
    assert (failed.practice, failed.severity) == (7, "high")
    assert f"on {day(now + timedelta(days=10))} (warning at 30 days)" in failed.detail
    passed = one(checks, "imported-material-expiry", "pass")
    assert set(passed.resources) == {later["Arn"], lasting["Arn"]} and passed.practice == 7
    recorded = {r for c in of(checks, "key-origin-recorded", "info") for r in c.resources}
    assert recorded == {soon["Arn"], later["Arn"], lasting["Arn"]}


# -- practice 8: keys as code ----------------------------------------------------------------

#: moto keeps a template's KeyPolicy object as a dict and then fails reading the key; given
#: as JSON text, which CloudFormation also accepts for a Json property, it works.
KEY_STACK = {
    "Resources": {
        "Key": {
            "Type": "AWS::KMS::Key",
            "Properties": {"Description": "made by a stack", "KeyPolicy": json.dumps(ROOT_ONLY)},
        }
    }
}


@pytest.fixture
def stack_key(moto_clients: ClientFactory) -> dict[str, Any]:
    """A key made by CloudFormation stack ``keys``."""
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(StackName="keys", TemplateBody=json.dumps(KEY_STACK))
    (made,) = cfn.list_stack_resources(StackName="keys")["StackResourceSummaries"]
    return dict(kms().describe_key(KeyId=made["PhysicalResourceId"])["KeyMetadata"])


def test_a_key_made_by_a_stack_passes_and_a_plain_key_is_info(
    moto_clients: ClientFactory, stack_key: dict[str, Any]
) -> None:
    plain = key()

    checks, calls = review(moto_clients, AUTOMATION)

    managed = one(checks, "keys-managed-as-code", "pass")
    assert managed.resources == (stack_key["Arn"],)
    assert managed.practice == 8
    assert "(stack keys)" in managed.detail
    unmanaged = one(checks, "keys-managed-as-code", "info")
    assert unmanaged.resources == (plain["Arn"],)
    assert "not managed by CloudFormation" in unmanaged.detail
    assert "ListStackResources" in calls  # moto tags no key: the stacks were read


def test_keys_tagged_by_cloudformation_need_no_stack_read(moto_clients: ClientFactory) -> None:
    """AWS tags the keys a stack makes with the stack: such keys pass without reading any
    stack (the tags are what AWS gives and moto does not)."""
    tagged = key()
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/legacy/0d7a-4a1c"

    def tags(audit: AuditContext) -> None:
        facts(audit, tagged["Arn"]).tags = {STACK_NAME_TAG: "legacy", STACK_ID_TAG: stack_id}

    checks, calls = review(moto_clients, AUTOMATION[:1], tags)

    assert one(checks, "keys-managed-as-code", "pass").resources == (tagged["Arn"],)
    assert "(stack legacy)" in one(checks, "keys-managed-as-code", "pass").detail
    assert "ListStacks" not in calls and "ListStackResources" not in calls


def test_a_role_without_list_stacks_cannot_tell_which_keys_are_code(
    moto_clients: ClientFactory, stack_key: dict[str, Any]
) -> None:
    """moto tags no key with its stack: without cloudformation:ListStacks no key can be
    placed, and both checks say could-not-check for both keys, naming the permission."""
    plain = key()
    clients = lacking("cloudformation:ListStacks")

    with enable_iam_authentication():
        checks, _ = review(clients, AUTOMATION)

    for check_id in ("keys-managed-as-code", "cloudformation-drift"):
        unknown = one(checks, check_id, "could-not-check")
        assert set(unknown.resources) == {stack_key["Arn"], plain["Arn"]}
        assert unknown.missing == "cloudformation:ListStacks"
        assert not of(checks, check_id, "pass")


def test_drift_in_moto_cannot_be_checked_and_no_stack_is_not_applicable(
    moto_clients: ClientFactory, stack_key: dict[str, Any]
) -> None:
    """AWS's DescribeStacks always holds DriftInformation (NOT_CHECKED until a detection
    runs: https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_StackDriftInformation.html);
    moto gives none, so in the sandbox the drift is could-not-check."""
    checks, calls = review(moto_clients, AUTOMATION)

    drift = one(checks, "cloudformation-drift", "could-not-check")
    assert drift.resources == (stack_key["Arn"],)
    assert drift.practice == 8
    assert drift.missing is not None and "DriftInformation" in drift.missing
    assert "DetectStackDrift" not in calls


def test_drift_is_not_applicable_without_keys_in_stacks(moto_clients: ClientFactory) -> None:
    key()

    checks, _ = review(moto_clients, AUTOMATION)

    (drift,) = of(checks, "cloudformation-drift")
    assert drift.status == "not-applicable" and drift.practice == 8


def drifted(status: str, drifts: list[dict[str, Any]]) -> Callable[[AuditContext], None]:
    """A ``change`` answering DescribeStacks with ``status`` as the stack's last drift result
    and DescribeStackResourceDrifts with ``drifts`` (AWS's answers; moto has neither)."""

    def change(audit: AuditContext) -> None:
        real = audit.client("cloudformation")

        def describe_stacks(**kwargs: Any) -> dict[str, Any]:
            stacks = real.describe_stacks(**kwargs)["Stacks"]
            information: dict[str, Any] = {"StackDriftStatus": status}
            if status != "NOT_CHECKED":
                information["LastCheckTimestamp"] = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
            return {"Stacks": [{**s, "DriftInformation": information} for s in stacks]}

        answering(
            "cloudformation",
            describe_stacks=describe_stacks,
            describe_stack_resource_drifts=lambda **_: {"StackResourceDrifts": drifts},
        )(audit)

    return change


def test_a_drifted_key_is_named_with_what_changed(
    moto_clients: ClientFactory, stack_key: dict[str, Any]
) -> None:
    drifts = [
        {
            "LogicalResourceId": "Key",
            "PhysicalResourceId": stack_key["KeyId"],
            "ResourceType": "AWS::KMS::Key",
            "StackResourceDriftStatus": "MODIFIED",
            "PropertyDifferences": [{"PropertyPath": "/KeyPolicy", "DifferenceType": "NOT_EQUAL"}],
        }
    ]

    checks, _ = review(moto_clients, AUTOMATION, drifted("DRIFTED", drifts))

    (drift,) = of(checks, "cloudformation-drift")
    assert drift.status == "info" and drift.resources == (stack_key["Arn"],)
    assert f"{stack_key['KeyId']} MODIFIED (/KeyPolicy)" in drift.detail
    assert "last check 2026-11-20" in drift.detail


def test_a_stack_never_checked_for_drift_says_so(
    moto_clients: ClientFactory, stack_key: dict[str, Any]
) -> None:
    checks, _ = review(moto_clients, AUTOMATION, drifted("NOT_CHECKED", []))

    (drift,) = of(checks, "cloudformation-drift")
    assert drift.status == "info" and drift.resources == (stack_key["Arn"],)
    assert "drift was never detected on stack keys" in drift.detail
    assert "detect-stack-drift" in drift.fix
