"""Containing the actor in IAM against moto: deactivate and reactivate an access key
(revoking role sessions, the deny-all policy and the responder's protection through an
assumed role: test_iam_containment)."""

from __future__ import annotations

import pytest

from kmsir.actions.base import EarlierAttempt
from kmsir.actions.iam import AccessKeyParams, DeactivateAccessKey, ReactivateAccessKey
from kmsir.aws import ClientFactory
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call, describe

from .fakes import context


@pytest.fixture
def leaked(moto_clients: ClientFactory) -> dict[str, str]:
    """An IAM user with two access keys: the leaked one and the one the run signs with."""
    iam = moto_clients.client("iam")
    iam.create_user(UserName="svc-reports")
    first = iam.create_access_key(UserName="svc-reports")["AccessKey"]
    second = iam.create_access_key(UserName="svc-reports")["AccessKey"]
    return {
        "key": first["AccessKeyId"],
        "own": second["AccessKeyId"],
        "own_secret": second["SecretAccessKey"],
    }


def status(clients: ClientFactory, key_id: str) -> str:
    keys = clients.client("iam").list_access_keys(UserName="svc-reports")["AccessKeyMetadata"]
    return str(next(k["Status"] for k in keys if k["AccessKeyId"] == key_id))


def test_deactivate_then_already_then_reactivate(
    moto_clients: ClientFactory, leaked: dict[str, str]
) -> None:
    ctx, calls = context(moto_clients)
    params = AccessKeyParams(user="svc-reports", access_key_id=leaked["key"])
    preview = DeactivateAccessKey().preview(ctx, params)
    assert [describe(c) for c in preview.calls] == [
        f"iam:UpdateAccessKey UserName=svc-reports AccessKeyId={leaked['key']} Status=Inactive"
    ]
    assert preview.target == f"access key {leaked['key']} of IAM user svc-reports"
    assert preview.state.startswith("access key Active")

    outcome = DeactivateAccessKey().run(ctx, params)
    assert status(moto_clients, leaked["key"]) == "Inactive"
    assert outcome.status == "succeeded"
    assert outcome.before == {
        "user": "svc-reports",
        "access_key_id": leaked["key"],
        "status": "Active",
    }
    assert outcome.after == {**outcome.before, "status": "Inactive"}

    again = DeactivateAccessKey().run(ctx, params)
    assert again.status == "already" and "already Inactive" in again.summary
    assert DeactivateAccessKey().preview(ctx, params).calls == ()
    # sent once, exactly as previewed
    assert [c.identity for c in calls if c.operation == "UpdateAccessKey"] == [
        c.identity for c in preview.calls
    ]

    back = ReactivateAccessKey().run(ctx, params)
    assert back.after is not None and back.after["status"] == "Active"
    assert status(moto_clients, leaked["key"]) == "Active"


def test_the_callers_own_key_is_refused(
    moto_clients: ClientFactory, leaked: dict[str, str]
) -> None:
    import boto3

    own = ClientFactory(
        session_factory=lambda: boto3.Session(
            aws_access_key_id=leaked["own"],
            aws_secret_access_key=leaked["own_secret"],
            region_name="eu-west-1",
        ),
        region="eu-west-1",
        guard_send=True,
    )
    ctx, calls = context(own)
    params = AccessKeyParams(user="svc-reports", access_key_id=leaked["own"])
    for attempt in (DeactivateAccessKey().preview, DeactivateAccessKey().run):
        with pytest.raises(ActionError, match="the access key this run itself signs"):
            attempt(ctx, params)
    assert status(moto_clients, leaked["own"]) == "Active"
    # only read: who the caller is (sts:GetCallerIdentity), nothing about the key changed
    assert [c.operation for c in calls] == ["GetCallerIdentity", "GetCallerIdentity"]
    # the other key of the same user is fair game
    DeactivateAccessKey().run(ctx, AccessKeyParams(user="svc-reports", access_key_id=leaked["key"]))
    assert status(moto_clients, leaked["key"]) == "Inactive"


def test_a_key_of_another_user_is_refused(
    moto_clients: ClientFactory, leaked: dict[str, str]
) -> None:
    moto_clients.client("iam").create_user(UserName="someone-else")
    ctx, _ = context(moto_clients)
    params = AccessKeyParams(user="someone-else", access_key_id=leaked["key"])
    with pytest.raises(ActionError, match="is not one of IAM user someone-else's keys"):
        DeactivateAccessKey().run(ctx, params)
    assert status(moto_clients, leaked["key"]) == "Active"


def test_a_resumed_step_reports_the_change_its_interrupted_attempt_made(
    moto_clients: ClientFactory, leaked: dict[str, str]
) -> None:
    """The call went out before the run stopped: the re-check sees Inactive and reports the
    change as made (not "already"), sending nothing again."""
    ctx, calls = context(moto_clients)
    params = AccessKeyParams(user="svc-reports", access_key_id=leaked["key"])
    moto_clients.client("iam").update_access_key(
        UserName="svc-reports", AccessKeyId=leaked["key"], Status="Inactive"
    )
    calls.clear()
    before = {"user": "svc-reports", "access_key_id": leaked["key"], "status": "Active"}
    sent = Call(service="iam", operation="UpdateAccessKey")
    ctx.earlier_attempt = EarlierAttempt(before=before, sent=(sent,))
    outcome = DeactivateAccessKey().run(ctx, params)
    assert outcome.status == "succeeded" and outcome.before == before
    assert "Active -> Inactive" in outcome.summary
    assert not [c for c in calls if c.operation == "UpdateAccessKey"]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("svc-reports", "svc-reports"),
        ("arn:aws:iam::123456789012:user/svc-reports", "svc-reports"),
        ("arn:aws:iam::123456789012:user/team/a/svc-reports", "svc-reports"),
    ],
)
def test_user_is_a_name_or_a_user_arn(user: str, expected: str) -> None:
    assert AccessKeyParams(user=user, access_key_id="AKIAEXAMPLEKEY123456").user == expected


@pytest.mark.parametrize(
    ("user", "key"),
    [
        ("arn:aws:iam::123456789012:role/ci", "AKIAEXAMPLEKEY123456"),
        ("bad user", "AKIAEXAMPLEKEY123456"),
        ("svc", "akia-lowercase"),
    ],
)
def test_bad_parameters_are_refused(user: str, key: str) -> None:
    with pytest.raises(ValueError, match="is not an"):
        AccessKeyParams(user=user, access_key_id=key)
