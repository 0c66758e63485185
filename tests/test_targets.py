"""The accounts and Regions a run covers (``aws.targets``): the scope resolved from the
command line, clients in every account through STS AssumeRole, refreshed before they expire,
and the scope recorded for resume.

moto stands in for AWS: STS AssumeRole into any account id (the role need not exist),
Organizations ListAccounts, EC2 DescribeRegions. What moto cannot refuse (an AssumeRole that
AWS would deny) is refused by a botocore ``before-call`` hook on the session, as AWS would
answer it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kmsir.aws import ClientFactory
from kmsir.aws.targets import (
    Fleet,
    Scope,
    Target,
    explain,
    resolve_scope,
    session_name,
)
from kmsir.errors import AwsError, CheckModeRefusal, UsageError
from kmsir.evidence.calls import Call

from .clikit import cli

CALLER = "123456789012"  # moto's default account
OTHER = "111122223333"
THIRD = "444455556666"
#: An account whose role refuses to be assumed (the before-call hook below).
DENIED = "999988887777"
#: An account whose first AssumeRole is throttled (a transient failure), the next one not.
THROTTLED = "555566667777"
_throttled: set[str] = set()
REGION = "eu-west-1"
#: STS's role session name: https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
STS_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def _deny_assume_role(params: dict[str, Any], **_: Any) -> None:
    """AWS's answer to an AssumeRole the role's trust policy does not allow."""
    from botocore.exceptions import ClientError

    body = params.get("body")
    role = str(body.get("RoleArn", "")) if isinstance(body, dict) else ""
    if f"::{THROTTLED}:" in role and role not in _throttled:
        _throttled.add(role)
        raise ClientError(
            {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "AssumeRole"
        )
    if f"::{DENIED}:" in role:
        raise ClientError(
            {
                "Error": {
                    "Code": "AccessDenied",
                    "Message": f"User: arn:aws:sts::{CALLER}:assumed-role/ir/x is not "
                    f"authorized to perform: sts:AssumeRole on resource: {role}",
                }
            },
            "AssumeRole",
        )


def _session() -> Any:
    import boto3

    session = boto3.Session(region_name=REGION)
    session.events.register("before-call.sts.AssumeRole", _deny_assume_role)
    return session


def factory() -> ClientFactory:
    """The caller's clients, in moto (a request moto does not answer is refused)."""
    return ClientFactory(session_factory=_session, region=REGION, guard_send=True)


@dataclass(frozen=True)
class World:
    base: ClientFactory
    #: The organisation's accounts besides the management account (the caller's).
    active: tuple[str, ...]
    suspended: str


@pytest.fixture(scope="class")
def world() -> Iterator[World]:
    """One moto for a class's tests (a module's would outlive them, into the sandbox runs
    below): an organisation managed from the caller's account, two active member accounts
    and a suspended one."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            base = factory()
            org = base.client("organizations")
            org.create_organization(FeatureSet="ALL")
            made = [
                org.create_account(AccountName=f"member-{n}", Email=f"m{n}@example.org")[
                    "CreateAccountStatus"
                ]["AccountId"]
                for n in range(3)
            ]
            org.close_account(AccountId=made[2])  # SUSPENDED
            yield World(base, tuple(sorted(made[:2])), made[2])


def assumed(account: str) -> list[Any]:
    """The AssumeRole calls moto's STS answered into ``account`` (what STS saw)."""
    from moto.sts.models import sts_backends

    return list(sts_backends[account]["aws"].assumed_roles)


def scope_of(base: ClientFactory, **given: Any) -> Scope:
    options: dict[str, Any] = {
        "accounts": (),
        "org": False,
        "exclude": (),
        "role_name": None,
        "external_id": None,
        "regions": (),
    }
    return resolve_scope(base, **{**options, **given})


# -- the recorded scope and the session name ----------------------------------------------


def test_the_scope_round_trips_through_json() -> None:
    scope = Scope(CALLER, (CALLER, OTHER), ("eu-west-1",), "R", "ext-1", True, (THIRD,))
    assert Scope.from_json(scope.to_json()) == scope
    with pytest.raises(UsageError, match="recorded scope"):
        Scope.from_json({**scope.to_json(), "accounts": ["nope"]})


@pytest.mark.parametrize(
    ("incident", "expected"),
    [
        ("INC-42", "kmsir-INC-42"),
        ("INC 42/ü#x", "kmsir-INC-42---x"),
        ("a" * 100, "kmsir-" + "a" * 58),
    ],
)
def test_session_name_is_what_sts_accepts(incident: str, expected: str) -> None:
    name = session_name(incident)
    assert name == expected
    assert STS_SESSION_NAME.fullmatch(name)


# -- the scope and the fleet in moto ------------------------------------------------------


def _keys(clients: ClientFactory) -> list[dict[str, Any]]:
    return list(clients.client("kms").list_keys()["Keys"])


class TestOneOrganisation:
    """The scope and the fleet in one moto (``world``): an organisation and its accounts."""

    def test_given_accounts_are_sorted_with_the_caller_s_first(self, world: World) -> None:
        scope = scope_of(
            world.base,
            accounts=[THIRD, CALLER, OTHER],
            role_name="KmsirResponder",
            regions=["us-east-1", "eu-west-1"],
        )
        assert scope.caller_account == CALLER
        assert scope.accounts == (CALLER, OTHER, THIRD)
        assert scope.regions == ("us-east-1", "eu-west-1")
        assert scope.targets()[:3] == (
            Target(CALLER, "us-east-1"),
            Target(CALLER, "eu-west-1"),
            Target(OTHER, "us-east-1"),
        )
        assert len(scope.targets()) == 6
        assert scope.targets()[0].label == f"{CALLER}/us-east-1"

    def test_no_accounts_and_no_regions_is_the_caller_s_account_in_the_run_s_region(
        self,
        world: World,
    ) -> None:
        scope = scope_of(world.base)
        assert scope.targets() == (Target(CALLER, REGION),)

    def test_org_covers_active_accounts_only_minus_the_excluded(self, world: World) -> None:
        kept, excluded = world.active
        scope = scope_of(world.base, org=True, exclude=[excluded], role_name="KmsirResponder")
        assert scope.accounts == (CALLER, kept)
        assert world.suspended not in scope.accounts
        assert scope.org and scope.excluded == (excluded,)

    def test_regions_all_are_the_enabled_regions(self, world: World) -> None:
        scope = scope_of(world.base, regions=["all"])
        assert {"eu-west-1", "us-east-1", "ap-southeast-2"} <= set(scope.regions)
        assert list(scope.regions) == sorted(scope.regions)
        assert all(re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", r) for r in scope.regions)

    @pytest.mark.parametrize(
        ("given", "named"),
        [
            ({"accounts": ["12345"]}, "--accounts '12345'"),
            ({"accounts": ["1111222233334"]}, "--accounts '1111222233334'"),
            ({"regions": ["eu-west"]}, "--regions 'eu-west'"),
            ({"regions": ["EU-WEST-1"]}, "--regions 'EU-WEST-1'"),
            ({"regions": ["all", "eu-west-1"]}, "--regions all"),
            ({"accounts": [OTHER], "org": True, "role_name": "R"}, "--accounts and --org"),
            ({"exclude": [OTHER]}, "--exclude"),
            ({"org": True, "exclude": ["x"], "role_name": "R"}, "--exclude 'x'"),
            ({"accounts": [OTHER], "role_name": "bad role"}, "--role-name 'bad role'"),
            ({"accounts": [OTHER], "external_id": "abc"}, "--external-id"),
            ({"regions": ["eu-west-1"], "role_name": "R"}, "--role-name"),
        ],
    )
    def test_bad_values_and_conflicts_are_one_line_usage_errors(
        self, world: World, given: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(UsageError) as raised:
            scope_of(world.base, **given)
        assert named in str(raised.value)
        assert "\n" not in str(raised.value)

    def test_another_account_without_a_role_name_is_refused_naming_it(self, world: World) -> None:
        with pytest.raises(UsageError, match=f"--accounts {OTHER}: .*needs --role-name"):
            scope_of(world.base, accounts=[CALLER, OTHER])
        with pytest.raises(UsageError, match=r"--org: .*needs --role-name"):
            scope_of(world.base, org=True)

    def test_another_account_is_reached_through_assume_role_with_the_external_id(
        self,
        world: World,
    ) -> None:
        scope = Scope(CALLER, (CALLER, OTHER), (REGION,), "KmsirResponder", "ir-2026-ext")
        fleet = Fleet(world.base, scope, session_name("INC-7"))
        assert fleet.clients(CALLER) is world.base
        before = len(assumed(OTHER))
        key = fleet.clients(OTHER).client("kms").create_key()["KeyMetadata"]
        assert key["Arn"].startswith(f"arn:aws:kms:{REGION}:{OTHER}:key/")
        assert OTHER not in {k["KeyArn"].split(":")[4] for k in _keys(world.base)}
        (made,) = assumed(OTHER)[before:]
        assert made.role_arn == f"arn:aws:iam::{OTHER}:role/KmsirResponder"
        assert made.session_name == "kmsir-INC-7"
        assert made.external_id == "ir-2026-ext"

    def test_an_account_outside_the_scope_is_refused(self, world: World) -> None:
        fleet = Fleet(world.base, Scope(CALLER, (CALLER,), (REGION,)), "kmsir-x")
        with pytest.raises(UsageError, match=f"account {OTHER} is not in the run's scope"):
            fleet.clients(OTHER)

    def test_a_refused_assume_role_is_one_error_naming_the_account_and_the_others_go_on(
        self,
        world: World,
    ) -> None:
        scope = Scope(CALLER, (CALLER, THIRD, DENIED), (REGION,), "KmsirResponder")
        fleet = Fleet(world.base, scope, "kmsir-INC-8")
        denied = fleet.clients(DENIED)
        for _ in range(2):  # asked again: the same one line
            with pytest.raises(AwsError) as raised:
                denied.client("kms")
            message = str(raised.value)
            assert message.startswith(f"account {DENIED}: AssumeRole of ")
            assert f"arn:aws:iam::{DENIED}:role/KmsirResponder" in message
            assert "AccessDenied" in message and "\n" not in message
        assert assumed(DENIED) == []
        assert (
            fleet.clients(THIRD).client("kms").create_key()["KeyMetadata"]["AWSAccountId"] == THIRD
        )

    def test_a_throttled_assume_role_is_tried_again_at_the_account_s_next_client(
        self, world: World
    ) -> None:
        scope = Scope(CALLER, (CALLER, THROTTLED), (REGION,), "KmsirResponder")
        clients = Fleet(world.base, scope, "kmsir-INC-10").clients(THROTTLED)
        with pytest.raises(AwsError, match=f"account {THROTTLED}: AssumeRole .*Throttling"):
            clients.client("kms")
        # a transient failure is not the account's answer for the rest of the run
        made = clients.client("kms").create_key()["KeyMetadata"]
        assert made["AWSAccountId"] == THROTTLED
        assert len(assumed(THROTTLED)) == 1

    def test_assume_role_is_journaled_by_the_base_s_recorder_without_credentials(
        self, world: World
    ) -> None:
        import msgspec

        account = "777788889999"
        base = factory()
        heard: list[Call] = []
        base.recorder = heard.append
        base.check_mode = True  # AssumeRole changes nothing: a check-mode run assumes roles
        fleet = Fleet(base, Scope(CALLER, (CALLER, account), (REGION,), "R", "ext-1"), "kmsir-J")
        clients = fleet.clients(account)
        clients.client("kms").list_keys()
        (made,) = [c for c in heard if c.operation == "AssumeRole"]
        assert made.service == "sts" and made.http_status == 200 and made.account is None
        assert made.params == {
            "RoleArn": f"arn:aws:iam::{account}:role/R",
            "RoleSessionName": "kmsir-J",
            "ExternalId": "ext-1",
        }
        assert [c.operation for c in heard] == ["AssumeRole", "ListKeys"]
        credentials = clients.session().get_credentials()
        assert credentials is not None
        frozen = credentials.get_frozen_credentials()
        journal = msgspec.json.encode(heard).decode()
        assert frozen.secret_key and frozen.token
        assert frozen.secret_key not in journal and frozen.token not in journal

    def test_assumed_credentials_are_refreshed_before_they_expire(self, world: World) -> None:
        shift = [timedelta(0)]

        def now() -> datetime:
            return datetime.now(timezone.utc) + shift[0]

        account = "222233334444"
        fleet = Fleet(
            world.base, Scope(CALLER, (CALLER, account), (REGION,), "R"), "kmsir-s", now=now
        )
        kms = fleet.clients(account).client("kms")
        kms.create_key()
        assert len(assumed(account)) == 1
        kms.list_keys()
        assert len(assumed(account)) == 1  # still fresh: not assumed again
        shift[0] = timedelta(minutes=55)  # moto's credentials last an hour
        keys = kms.list_keys()["Keys"]
        assert len(assumed(account)) >= 2
        assert [k["KeyArn"].split(":")[4] for k in keys] == [account]

    def test_check_mode_and_the_journal_of_the_base_apply_in_every_account(
        self, world: World
    ) -> None:
        base = factory()
        fleet = Fleet(base, Scope(CALLER, (CALLER, OTHER), (REGION,), "R"), "kmsir-INC-9")
        kms = fleet.clients(OTHER).client("kms")
        heard: list[Call] = []
        base.recorder = heard.append  # the engine sets them on the base at a run's start
        base.check_mode = True
        with pytest.raises(CheckModeRefusal):
            kms.create_key()
        kms.list_keys()
        assert [c.operation for c in heard] == ["ListKeys"]


@pytest.mark.parametrize(
    "code", ["UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure"]
)
def test_an_unknown_token_in_a_target_s_region_asks_whether_the_region_is_enabled(
    code: str,
) -> None:
    error = AwsError(
        f"ListKeys: AWS {code}: The security token is invalid", code=code, operation=""
    )
    said = explain(error, OTHER, "af-south-1")
    assert said == (
        f"ListKeys: AWS {code}: The security token is invalid (is Region af-south-1 enabled "
        f"for account {OTHER}? opt-in Regions must be enabled per account)"
    )
    denied = AwsError(
        "ListKeys: AWS AccessDeniedException", code="AccessDeniedException", operation=""
    )
    assert explain(denied, OTHER, "af-south-1") == str(denied)


def test_assumed_clients_keep_the_profile_s_configuration(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile whose endpoint_url is a local endpoint: the assumed role's clients go there
    too, never to AWS (botocore's endpoint_url setting in the shared config file:
    https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html)."""
    config = tmp_path / "config"
    config.write_text(
        "[profile ir]\n"
        f"region = {REGION}\n"
        f"endpoint_url = {moto_server.endpoint}\n"
        "aws_access_key_id = testing\n"
        "aws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    base = ClientFactory.live("ir", REGION)
    fleet = Fleet(base, Scope(CALLER, (CALLER, OTHER), (REGION,), "R"), "kmsir-P")
    kms = fleet.clients(OTHER).client("kms")
    assert kms.meta.endpoint_url == moto_server.endpoint
    assert kms.create_key()["KeyMetadata"]["AWSAccountId"] == OTHER


# -- the command line and the run ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--accounts", "1234"], "--accounts '1234'"),
        (["--accounts", f"{OTHER},,{THIRD}"], "an empty item"),
        (["--accounts", OTHER, "--org", "--role-name", "R"], "--accounts and --org"),
        (["--exclude", OTHER], "--exclude: only with --org"),
        (["--regions", "mars-1"], "--regions 'mars-1'"),
        (["--regions", "all,eu-west-1"], "--regions all"),
        (["--external-id", "x1"], "--external-id: only with --role-name"),
    ],
)
@pytest.mark.parametrize("command", [["run", "kms-posture-review"], ["audit"]])
def test_bad_scope_options_are_one_line_and_exit_2(
    command: list[str], args: list[str], named: str, tmp_path: Path
) -> None:
    ran = cli(*command, *args, "--evidence-dir", tmp_path / "evidence", "--sandbox", "x")
    assert ran.exit_code == 2
    assert ran.stderr.count("\n") == 1 and named in ran.stderr
    assert not (tmp_path / "evidence").exists()


def test_another_account_without_role_name_stops_before_any_bundle(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    ran = cli(
        "audit", "--sandbox", "rogue-grant", "--accounts", f"{CALLER},{OTHER}",
        "--evidence-dir", evidence,
    )  # fmt: skip
    assert ran.exit_code == 2
    assert ran.stderr.strip().endswith(
        f"--accounts {OTHER}: an account other than yours ({CALLER}) needs --role-name, "
        "the role kmsir assumes in it"
    )
    assert not evidence.exists()


def test_the_scope_options_have_examples_in_their_help() -> None:
    ran = cli("run", "--help")
    for option in ("--accounts", "--org", "--exclude", "--role-name", "--external-id"):
        assert option in ran.stdout
    text = " ".join(ran.stdout.split())
    assert "e.g. --accounts 111122223333," in text and "e.g. --regions us-east-1," in text
    assert "--regions all" in text


PAUSED_SNAPSHOT = """\
id: scope-resume
title: The scope survives a resume
version: 1
severity: low
steps:
  - id: go-on
    name: Ask before the snapshot
    action: confirm
    with: {message: "Snapshot every account?"}
  - id: snapshot
    name: Snapshot every key
    action: kms.snapshot
    with: {all: true}
"""


def test_resume_covers_the_scope_the_run_recorded(tmp_path: Path) -> None:
    from kmsir.run import resume as resuming

    playbook = tmp_path / "scope-resume.yaml"
    playbook.write_text(PAUSED_SNAPSHOT)
    evidence = tmp_path / "evidence"
    ran = cli(
        "run", playbook, "--sandbox", "rogue-grant", "--incident", "INC-scope",
        "--accounts", f"{OTHER},{CALLER}", "--role-name", "KmsirResponder",
        "--regions", "eu-west-1,us-east-1", "--evidence-dir", evidence,
    )  # fmt: skip
    assert ran.exit_code == 1 and "no answer for 'go-on'" in ran.stderr  # stopped first
    (bundle,) = (evidence / "INC-scope").glob("*/")
    recorded = resuming.load(bundle).meta.scope
    assert recorded == {
        "caller_account": CALLER,
        "accounts": [CALLER, OTHER],
        "regions": ["eu-west-1", "us-east-1"],
        "role_name": "KmsirResponder",
        "external_id": None,
        "org": False,
        "excluded": [],
    }
    # resume is given no scope option: it covers the recorded one
    assert cli("resume", bundle, "--yes").exit_code == 0
    outputs = resuming.load(bundle).view.steps["snapshot"].outputs
    reached = {(t["account"], t["region"]) for t in outputs["targets"] if t["status"] == "reached"}
    assert reached == {(a, r) for a in (CALLER, OTHER) for r in ("eu-west-1", "us-east-1")}
