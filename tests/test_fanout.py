"""One run over several accounts and Regions (issue 20): moto with 4 accounts x 3 Regions,
keys created in each account through its own assumed role, one account whose AssumeRole is
refused. The run snapshots every key, collects a key's CloudTrail history by ``lookup`` in
every account and Region, finds the deletion planted in the key's own account, and disables
the key in its account: one decision, one key (and a key of the caller's own account, so that
changes go to two accounts). A second run in the same world runs the shipped
kms-key-compromise playbook on a key in another account, then rolls it back
(tests/test_fanout_shipped.py). (``kms.audit`` fans out the same way; its merge is tested in
tests/test_report_scope.py: a review of 9 moto accounts and Regions costs half a minute of
moto's backends.)

moto's STS accepts any role, so the refusal is injected with a botocore ``before-call``
handler on ``AssumeRole`` for that account (AWS answers ``AccessDenied``:
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions, report
from kmsir.aws import ClientFactory
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.view import RunView
from kmsir.playbook import model as playbook
from kmsir.prompts import Answer, NoteTaker, ScriptedPrompter, StepPreview
from kmsir.run.engine import Engine, RunOptions, RunResult

CALLER = "123456789012"  # moto's default account: the caller's credentials
OTHERS = ("111111111111", "222222222222")
DENIED = "999999999999"
ACCOUNTS = (CALLER, *OTHERS, DENIED)
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
ROLE = "kmsir-responder"
#: The key of the incident: in the second account, in eu-west-1.
HOME = (OTHERS[0], "eu-west-1")

PLAYBOOK = """\
id: org-fanout
title: A key across the organisation
inputs:
  key: {type: kms-key, required: true}
  own: {type: kms-key, required: true}
steps:
  - id: snapshot
    action: kms.snapshot
    with: {all: true}
  - id: collect
    action: cloudtrail.collect
    with: {key: "{{ inputs.key }}", source: lookup, since: 7d}
  - id: findings
    action: cloudtrail.findings
    with: {events: collect, window: 24h}
  - id: contain
    action: kms.disable-key
    with: {key: "{{ inputs.key }}"}
  - id: contain-own
    action: kms.disable-key
    with: {key: "{{ inputs.own }}"}
"""
#: A key of the caller's own account the first run disables too.
OWN = (CALLER, "eu-west-1")


class _Recording(ScriptedPrompter):
    """Scripted answers; the target line of every preview shown, kept."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__(answers, source="test answers")
        self.targets: dict[str, str | None] = {}

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        self.targets[preview.step_id] = preview.target
        return super().before_step(preview, note)


@dataclass
class Fanned:
    result: RunResult
    view: RunView
    #: (account, region) -> the key ARNs created there.
    keys: dict[tuple[str, str], list[str]]
    key: str
    #: Each key's state after the run, by ARN.
    states: dict[str, str]
    report_md: str
    report_html: str
    #: The target line of each preview shown, by step.
    previews: dict[str, str | None]


def _deny_assume_role(params: dict[str, Any], **_: Any) -> None:
    from botocore.exceptions import ClientError

    role = str((params.get("body") or {}).get("RoleArn", ""))
    if f":{DENIED}:" in role:
        message = f"User is not authorized to perform: sts:AssumeRole on resource: {role}"
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, "AssumeRole")


def _caller_session() -> Any:
    import boto3

    session = boto3.Session(
        region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    session.events.register("before-call.sts.AssumeRole", _deny_assume_role)
    return session


def _session_in(account: str) -> Any:
    """A session in ``account`` (moto: the assumed role's credentials belong to it)."""
    import boto3

    if account == CALLER:
        return _caller_session()
    sts = _caller_session().client("sts")
    found = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="setup")
    creds = found["Credentials"]
    return boto3.Session(
        region_name="eu-west-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _deletion_event(arn: str, when: datetime) -> dict[str, Any]:
    account, region = arn.split(":")[4], arn.split(":")[3]
    return {
        "eventVersion": "1.11",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/Mallory"},
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com",
        "eventName": "ScheduleKeyDeletion",
        "awsRegion": region,
        "sourceIPAddress": "203.0.113.9",
        "requestParameters": {"keyId": arn, "pendingWindowInDays": 7},
        "responseElements": {"keyId": arn, "keyState": "PendingDeletion"},
        "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": arn}],
        "eventID": "planted-deletion-1",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }


@dataclass
class World:
    tmp: Path
    keys: dict[tuple[str, str], list[str]]
    sessions: dict[str, Any]
    scope: Any
    #: A new engine on the caller's clients and the scope's fleet, with its prompter.
    engine: Any

    def states(self) -> dict[str, str]:
        """Each key's state now, read in its own account, by ARN."""
        return {
            arn: self.sessions[account]
            .client("kms", region_name=region)
            .describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]
            for (account, region), arns in self.keys.items()
            for arn in arns
        }


@contextmanager
def moto_accounts(tmp: Path) -> Iterator[pytest.MonkeyPatch]:
    """moto for every account (a module's world), with no AWS profile, config or endpoint
    of the machine's, LookupEvents answered and never paced in real time."""
    from moto import mock_aws

    from kmsir.aws.pacing import QUOTAS, Pacing
    from kmsir.sandbox import lookup

    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        patch.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setattr("kmsir.aws.pacing.PACING", Pacing(QUOTAS, sleep=lambda _: None))
        lookup.install()
        yield patch


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:

    from kmsir.aws.targets import Fleet, Scope, session_name
    from kmsir.sandbox import lookup

    tmp = tmp_path_factory.mktemp("fanout")
    with moto_accounts(tmp):
        keys: dict[tuple[str, str], list[str]] = {}
        sessions = {account: _session_in(account) for account in (CALLER, *OTHERS)}
        for account, session in sessions.items():
            for n, region in enumerate(REGIONS):
                kms = session.client("kms", region_name=region)
                for i in range(1 + (n + len(keys)) % 2):  # one or two keys in each
                    made = kms.create_key(Description=f"{account} {region} {i}")
                    keys.setdefault((account, region), []).append(made["KeyMetadata"]["Arn"])
        now = datetime.now(timezone.utc)
        lookup.add_events(*HOME, [_deletion_event(keys[HOME][0], now - timedelta(hours=1))])
        scope = Scope(caller_account=CALLER, accounts=ACCOUNTS, regions=REGIONS, role_name=ROLE)

        def engine(prompter: ScriptedPrompter, incident: str) -> Engine:
            base = ClientFactory(
                session_factory=_caller_session, region="eu-west-1", guard_send=True
            )
            return Engine(
                actions=actions.registry(),
                clients=base,
                prompter=prompter,
                sleep=lambda _: None,
                fleet=Fleet(base, scope, session_name(incident)),
            )

        yield World(tmp, keys, sessions, scope, engine)


@pytest.fixture(scope="module")
def fanned(world: World) -> Fanned:
    tmp, keys = world.tmp, world.keys
    key = keys[HOME][0]
    prompter = _Recording({"contain": "run", "contain-own": "run"})
    path = tmp / "org-fanout.yaml"
    path.write_text(PLAYBOOK)
    loaded = playbook.load(path, actions.catalog())
    options = RunOptions(
        incident_id="INC-fanout",
        evidence_dir=tmp / "evidence",
        mode="sandbox",
        extra={"scope": world.scope.to_json()},
    )
    engine = world.engine(prompter, "INC-fanout")
    result = engine.run(loaded, {"key": key, "own": keys[OWN][0]}, options)
    states = world.states()
    report.write(result.bundle, fmt="md")
    report.write(result.bundle, fmt="html")
    return Fanned(
        result=result,
        view=read_journal(result.bundle / JOURNAL).view(),
        keys=keys,
        key=key,
        states=states,
        report_md=(result.bundle / "report.md").read_text(),
        report_html=(result.bundle / "report.html").read_text(),
        previews=prompter.targets,
    )


def _step_dir(bundle: Path, step: str) -> Path:
    (found,) = [p for p in (bundle / "artifacts").iterdir() if p.name.endswith(f"-{step}")]
    return found


def test_the_run_succeeds_with_one_account_denied(fanned: Fanned) -> None:
    assert fanned.result.status == "succeeded", fanned.result.error
    assert [s.status for s in fanned.result.steps] == ["succeeded"] * 5


def test_every_reached_account_and_region_has_its_own_keys_snapshotted(fanned: Fanned) -> None:
    folder = _step_dir(fanned.result.bundle, "snapshot")
    for (account, region), arns in fanned.keys.items():
        for arn in arns:
            key_file = folder / account / region / arn.rsplit("/", 1)[-1] / "key.json"
            metadata = json.loads(key_file.read_text())["KeyMetadata"]
            assert (metadata["AWSAccountId"], metadata["Arn"]) == (account, arn)
        kept = {p.name for p in (folder / account / region).iterdir()}
        assert kept == {arn.rsplit("/", 1)[-1] for arn in arns}  # that target's keys only
    assert not (folder / DENIED).exists()
    outputs = fanned.view.steps["snapshot"].outputs
    total = sum(len(arns) for arns in fanned.keys.values())
    assert outputs["count"] == total
    assert {(k["account"], k["region"], k["arn"]) for k in outputs["keys"]} == {
        (account, region, arn) for (account, region), arns in fanned.keys.items() for arn in arns
    }


def test_the_denied_account_is_reported_with_its_reason_and_the_others_reached(
    fanned: Fanned,
) -> None:
    for step in ("snapshot", "collect"):
        results = fanned.view.targets[step]
        assert len(results) == len(ACCOUNTS) * len(REGIONS)
        failed = {(r.account, r.region) for r in results if r.status == "failed"}
        assert failed == {(DENIED, region) for region in REGIONS}, step
        for r in results:
            if r.account == DENIED:
                assert "AccessDenied" in str(r.error) and DENIED in str(r.error)
        outputs = fanned.view.steps[step].outputs
        assert {(t["account"], t["status"]) for t in outputs["targets"]} == {
            *((a, "reached") for a in ACCOUNTS if a != DENIED),
            (DENIED, "failed"),
        }


def test_the_finding_is_in_the_key_s_account_with_its_account_and_region(fanned: Fanned) -> None:
    folder = _step_dir(fanned.result.bundle, "findings")
    merged = json.loads((folder / "findings.json").read_text())
    deletions = [f for f in merged if "planted-deletion-1" in f.get("event_ids", [])]
    assert deletions and all((f["account"], f["region"]) == HOME for f in deletions)
    assert {(f["account"], f["region"]) for f in merged} == {HOME}
    own = json.loads((folder / HOME[0] / HOME[1] / "findings.json").read_text())
    assert len(own) == len(merged)
    events = _step_dir(fanned.result.bundle, "collect") / HOME[0] / HOME[1] / "events.jsonl.gz"
    assert events.is_file()
    assert fanned.view.steps["collect"].outputs["count"] == 1


def test_the_key_is_disabled_in_its_own_account_and_nothing_else(fanned: Fanned) -> None:
    own = fanned.keys[OWN][0]
    assert fanned.states[fanned.key] == fanned.states[own] == "Disabled"
    others = {arn: state for arn, state in fanned.states.items() if arn not in (fanned.key, own)}
    assert set(others.values()) == {"Enabled"}
    contain = fanned.view.steps["contain"]
    assert contain.status == "succeeded"
    assert {c.region for c in contain.calls if c.operation == "DisableKey"} == {HOME[1]}
    # the journal names the account each call went to, and one numbering pairs intents
    # with answers across accounts
    assert {c.account for c in contain.calls if c.operation == "DisableKey"} == {HOME[0]}
    snapshot = fanned.view.steps["snapshot"].calls
    assert {c.account for c in snapshot} == {None, *OTHERS}  # None: the caller's own
    final = {k.get("arn"): k.get("state") for k in fanned.view.final_keys}
    assert final[fanned.key] == "Disabled"  # read again at the end, in its own account


def test_each_change_s_intent_is_paired_with_its_own_answer_across_accounts(
    fanned: Fanned,
) -> None:
    """Changes went to two accounts (each through its own credentials); one numbering pairs
    every intent journaled before a change with the answer to that very call."""
    intents = [c for s in fanned.view.steps.values() for c in s.intents]
    answers = [c for s in fanned.view.steps.values() for c in s.calls if c.call is not None]
    assert {c.account for c in intents} == {None, HOME[0]}  # the caller's own, and another
    for intent in intents:
        paired = [c for c in answers if c.call == intent.call]
        assert [(c.operation, c.account, c.params) for c in paired] == [
            (intent.operation, intent.account, intent.params)
        ], intent


def test_the_containment_preview_names_the_key_s_account_and_region(fanned: Fanned) -> None:
    assert f"(in account {HOME[0]}, {HOME[1]})" in str(fanned.previews["contain"])
    assert fanned.key in str(fanned.previews["contain"])
    # in a run with a scope, a key of the caller's own account is named with it too
    assert f"(in account {CALLER}, {OWN[1]})" in str(fanned.previews["contain-own"])


def test_a_loop_over_keys_of_several_accounts_groups_them_by_account_and_region() -> None:
    from kmsir.run.loops import grouped

    def arn(account: str, region: str, key: str) -> str:
        return f"arn:aws:kms:{region}:{account}:key/{key}"

    a, b = OTHERS
    keys = [arn(a, "eu-west-1", "1"), arn(b, "eu-west-1", "2"), arn(a, "us-east-1", "3")]
    keys += [arn(a, "eu-west-1", "4"), arn(b, "eu-west-1", "5")]
    assert [k[-1] for k in grouped(keys)] == ["1", "4", "2", "5", "3"]
    as_outputs = [{"arn": k} for k in keys]
    assert [k["arn"][-1] for k in grouped(as_outputs)] == ["1", "4", "2", "5", "3"]
    one_account = [arn(a, "us-east-1", "1"), arn(a, "eu-west-1", "2"), arn(a, "us-east-1", "3")]
    assert grouped(one_account) == one_account  # as before: no scope, no change


def test_the_bundle_verifies(fanned: Fanned) -> None:
    assert integrity.verify(fanned.result.bundle) == []


def test_the_report_s_scope_section_names_reached_and_failed_targets(fanned: Fanned) -> None:
    text = fanned.report_md
    section = text.split("## Scope", 1)[1].split("\n## ", 1)[0]
    assert "4 account(s) x 3 Region(s)" in section
    for account in (CALLER, *OTHERS):
        assert f"| `{account}` | reached | reached | reached |" in section
    assert f"| `{DENIED}` | failed | failed | failed |" in section
    for step in ("snapshot", "collect", "findings"):
        assert f"Step `{step}`" in section
    assert f"failed: `{DENIED}` / `eu-west-1`: " in section
    assert "AccessDenied" in section
    html = fanned.report_html
    assert "<h2>Scope</h2>" in html and f"<code>{DENIED}</code>" in html
    findings = text.split("## CloudTrail findings", 1)[1].split("\n## ", 1)[0]
    assert f"(in account `{HOME[0]}`, `{HOME[1]}`)" in findings


def test_a_step_fails_only_when_no_target_is_reached(moto_clients: ClientFactory) -> None:
    """Each target's failure is journaled; the step fails when every one failed, naming
    the first; one target reached is enough (its outcome merged, the failures listed)."""
    from kmsir.actions.base import Action, ActionContext, Outcome, Params
    from kmsir.aws.targets import Fleet, Scope
    from kmsir.errors import ActionError
    from kmsir.run.fanout import run_fanned

    from .fakes import context

    class Regional(Action[Params]):
        name = "test.regional"
        params = Params
        refused: frozenset[str] = frozenset()

        def run(self, ctx: ActionContext, params: Params) -> Outcome:
            region = ctx.clients.resolved_region
            if region in self.refused:
                raise ActionError(f"{region} is not enabled (OptInRequired)")
            ctx.write_json("seen.json", {"region": region})
            return Outcome(outputs={"region": region}, summary=f"read {region}")

    account = moto_clients.client("sts").get_caller_identity()["Account"]
    fleet = Fleet(moto_clients, Scope(account, (account,), REGIONS), "kmsir-test")
    action = Regional()
    action.refused = frozenset(REGIONS)
    ctx, _ = context(moto_clients, step_id="regional")
    with pytest.raises(ActionError, match=r"no account or Region of the scope was reached"):
        run_fanned(action, ctx, Params(), fleet)
    journaled = [data for kind, data in ctx.artifacts.events if kind == "target-result"]  # type: ignore[attr-defined]
    assert sorted((d["region"], d["status"]) for d in journaled) == sorted(
        (r, "failed") for r in REGIONS
    )

    action.refused = frozenset(REGIONS[1:])
    ctx, _ = context(moto_clients, step_id="regional")
    outcome = run_fanned(action, ctx, Params(), fleet)
    assert outcome.outputs["results"] == {f"{account}/{REGIONS[0]}": {"region": REGIONS[0]}}
    assert [t["status"] for t in outcome.outputs["targets"]] == ["reached", "failed", "failed"]
    assert "OptInRequired" in outcome.outputs["targets"][1]["error"]
    assert "1 of 3 account/Region target(s); 2 failed" in outcome.summary
    assert set(ctx.artifacts.files) == {f"{account}/{REGIONS[0]}/seen.json"}  # type: ignore[attr-defined]
