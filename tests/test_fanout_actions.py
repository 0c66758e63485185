"""The actions' side of a run over several accounts and Regions (issue 20's review): what a
fanned-out step's outputs say when merged, where a lookup is worth its calls, and what a
later single-key step finds of a fanned-out snapshot.

One moto world for the module (2 accounts x 2 Regions, the other account reached through
an assumed role, as tests/test_fanout.py); the merges are judged on their own inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from kmsir import actions
from kmsir.actions.base import Outcome
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.trail_lookup import key_regions
from kmsir.aws import ClientFactory
from kmsir.aws.targets import Target
from kmsir.errors import ActionError
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.view import RunView
from kmsir.playbook import model as playbook
from kmsir.prompts import ScriptedPrompter
from kmsir.run.engine import Engine, RunOptions, RunResult

from .fakes import context
from .test_fanout import CALLER, ROLE, _caller_session, _session_in, moto_accounts

OTHER = "111111111111"
REGIONS = ("eu-west-1", "us-east-1")

PLAYBOOK = """\
id: fanned-actions
title: A key of another account
inputs:
  key: {type: kms-key, required: true}
steps:
  - id: snapshot
    action: kms.snapshot
    with: {all: true}
  - id: collect
    action: cloudtrail.collect
    with: {key: "{{ inputs.key }}", source: lookup, since: 1d}
  - id: restore
    action: kms.restore-policy
    with: {key: "{{ inputs.key }}", from: snapshot}
"""


@dataclass
class World:
    result: RunResult
    view: RunView
    key: str
    base: ClientFactory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:

    from kmsir.aws.targets import Fleet, Scope, session_name

    tmp = tmp_path_factory.mktemp("fanned-actions")
    with moto_accounts(tmp):
        session = _session_in(OTHER)
        key = session.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
        session.client("kms", region_name="us-east-1").create_key()
        base = ClientFactory(session_factory=_caller_session, region="eu-west-1", guard_send=True)
        scope = Scope(
            caller_account=CALLER, accounts=(CALLER, OTHER), regions=REGIONS, role_name=ROLE
        )
        engine = Engine(
            actions=actions.registry(),
            clients=base,
            prompter=ScriptedPrompter({"restore": "run"}, source="test answers"),
            sleep=lambda _: None,
            fleet=Fleet(base, scope, session_name("INC-fanned")),
        )
        path = tmp / "fanned.yaml"
        path.write_text(PLAYBOOK)
        options = RunOptions(
            incident_id="INC-fanned",
            evidence_dir=tmp / "evidence",
            mode="sandbox",
            extra={"scope": scope.to_json()},
        )
        result = engine.run(playbook.load(path, actions.catalog()), {"key": key}, options)
        view = read_journal(result.bundle / JOURNAL).view()
        yield World(result=result, view=view, key=key, base=base)


def test_the_run_succeeds(world: World) -> None:
    assert world.result.status == "succeeded", world.result.error


def test_restore_policy_reads_the_policy_a_fanned_out_snapshot_kept(world: World) -> None:
    """The snapshot kept the key under ``<account>/<region>/<key_id>/`` (R2#1): the policy put
    back is that one, in the key's own account."""
    restore = world.view.steps["restore"]
    assert restore.status in ("succeeded", "already"), restore.summary
    assert restore.outputs["key_id"] == world.key.rsplit("/", 1)[-1]
    assert {c.account for c in restore.calls} == {OTHER}  # the key's own account


def test_a_lookup_calls_only_where_the_key_s_use_is_logged(world: World) -> None:
    """A single-Region key's events are logged in its Region (R1#14): each account is read
    there, and the other Region's targets say why they made no call."""
    collect = world.view.steps["collect"]
    looked = {(c.account, c.region) for c in collect.calls if c.operation == "LookupEvents"}
    assert looked == {(None, "eu-west-1"), (OTHER, "eu-west-1")}
    for target in world.view.targets["collect"]:
        assert target.status == "reached"
        told = "no LookupEvents in us-east-1" in str(target.summary)
        assert told is (target.region == "us-east-1"), target


def test_the_merged_collect_declares_what_it_returns(world: World) -> None:
    """R2#12: the merged outputs are the declared ones (``estimate`` kept, ``artifact`` null,
    each target's events file in ``artifacts``)."""
    outputs = world.view.steps["collect"].outputs
    assert set(outputs) == set(Collect.outputs)
    assert outputs["artifact"] is None and outputs["estimate"] is None
    assert len(outputs["artifacts"]) == len(REGIONS) * 2
    assert Collect.outputs["artifact"] == "str|null"


def test_a_key_id_is_refused_over_a_scope_naming_the_fix(world: World) -> None:
    """An id or alias names a different key in each account (R1#4)."""
    ctx, _ = context(world.base)
    ctx.scope = (f"{CALLER}/eu-west-1", f"{OTHER}/eu-west-1")
    key_id = world.key.rsplit("/", 1)[-1]
    with pytest.raises(ActionError, match=r'key: "\{\{ steps\.snapshot\.arn \}\}"') as caught:
        Collect().run(ctx, CollectParams(key=key_id))
    assert "\n" not in str(caught.value)


def test_a_multi_region_key_is_read_where_a_snapshot_found_its_replicas() -> None:
    """R1#14: a multi-Region key's Regions, as far as an earlier snapshot tells."""
    arn = f"arn:aws:kms:eu-west-1:{OTHER}:key/mrk-{'1' * 32}"
    replica = arn.replace("eu-west-1", "ap-southeast-2")
    assert key_regions(arn, {}) is None  # not known: every Region of the scope
    assert key_regions(arn.replace("mrk-", ""), {}) == ("eu-west-1",)
    single = {"snapshot": {"arn": arn, "replicas": [{"arn": replica}], "primary_arn": arn}}
    assert key_regions(arn, single) == ("eu-west-1", "ap-southeast-2")
    fanned = {"snap": {"keys": [{"arn": replica}, {"arn": arn}]}}
    assert key_regions(arn, fanned) == ("eu-west-1", "ap-southeast-2")
    params = CollectParams(key=arn)
    assert Collect().fans_out(params, single)
    assert params._key_regions == ("eu-west-1", "ap-southeast-2")


def test_regions_under_a_scope_narrow_the_targets_read(world: World) -> None:
    """``regions:`` in a run over accounts and Regions is not ignored (R1#14): a target
    outside it makes no call and says so."""
    ctx, calls = context(world.base)
    ctx.scope = (f"{CALLER}/eu-west-1", f"{CALLER}/us-east-1")
    params = CollectParams(key=world.key, regions=["us-east-1"])
    outcome = Collect().run(ctx, params)  # the target eu-west-1
    assert "no LookupEvents in eu-west-1: not in regions (us-east-1)" in outcome.summary
    assert [c for c in calls if c.operation == "LookupEvents"] == []
    assert outcome.outputs["count"] == 0


def _review(checks: list[dict[str, Any]]) -> bytes:
    return json.dumps({"checks": checks, "scope": {"keys": 1}}).encode()


def test_a_global_check_is_counted_once_per_account() -> None:
    """IAM and S3 have no Region: every Region of an account judges them alike (R1#7)."""
    from kmsir.actions.merges import postures

    policy = f"arn:aws:iam::{OTHER}:policy/kms-star"
    base = {"practice": 3, "title": "t", "severity": "high", "status": "fail"}
    targets = [Target(OTHER, r) for r in REGIONS]
    reviews = {
        t: _review(
            [
                {**base, "id": "iam-kms-star", "resources": [policy]},
                {
                    **base,
                    "id": "key-policy",
                    "resources": [f"arn:aws:kms:{t.region}:{OTHER}:key/k"],
                },
            ]
        )
        for t in targets
    }
    results = {t: Outcome(outputs={}, summary="") for t in targets}
    merged = json.loads(postures(results, reviews.get))
    ids = [c["id"] for c in merged["checks"]]
    assert ids.count("iam-kms-star") == 1 and ids.count("key-policy") == 2


def test_grants_to_outside_accounts_are_kept_for_every_replica() -> None:
    """A multi-Region key's replicas share its id: merged by ARN (R1#8/R2#2)."""
    from kmsir.actions.merges import snapshots

    def snapshot(region: str, grant: str) -> Outcome:
        key = {"key_id": "mrk-1", "arn": f"arn:aws:kms:{region}:{OTHER}:key/mrk-1"}
        outputs = {"keys": [key], "external_grants": {"mrk-1": [grant]}, "failed": {}}
        return Outcome(outputs=outputs, summary="")

    merged = snapshots({Target(OTHER, r): snapshot(r, f"g-{r}") for r in REGIONS}).outputs
    assert merged["external_grants"] == {
        f"arn:aws:kms:{r}:{OTHER}:key/mrk-1": [f"g-{r}"] for r in REGIONS
    }


def test_the_longest_estimate_is_kept_with_its_target() -> None:
    from kmsir.actions.merges import collections

    def pulled(seconds: int | None) -> Outcome:
        told = {"remaining_seconds": seconds, "suggestion": "athena"} if seconds else None
        return Outcome(outputs={"count": 0, "estimate": told}, summary="")

    results = {Target(OTHER, "eu-west-1"): pulled(400), Target(OTHER, "us-east-1"): pulled(900)}
    results[Target(CALLER, "eu-west-1")] = pulled(None)
    estimate = collections(results).outputs["estimate"]
    assert estimate["remaining_seconds"] == 900
    assert estimate["target"] == f"{OTHER}/us-east-1"


def test_an_organisation_table_is_read_over_the_run_s_scope(world: World) -> None:
    """R2#8: without ``accounts:`` the projected partitions are the run's scope; a table
    whose injected account column is still not named fails in one line naming ``accounts:``."""
    ctx, _ = context(world.base)
    ctx.scope = (f"{CALLER}/eu-west-1", f"{OTHER}/eu-west-1", f"{OTHER}/us-east-1")
    athena = world.base.client("athena")
    sent: list[str] = []
    athena.meta.events.register(
        "provide-client-params.athena.StartQueryExecution",
        lambda params, **_: sent.append(params["QueryString"]),
    )
    reason = (
        "CONSTRAINT_VIOLATION: For the injected projected partition column account, the "
        "WHERE clause must contain only static equality conditions"
    )
    params = CollectParams.model_validate(
        {
            "key": world.key,
            "source": "athena",
            "database": "trails",
            "table": "org",
            "partitions": "projection",
            "output": "s3://results/",
        }
    )
    with Stubber(athena) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
        status = {"State": "FAILED", "StateChangeReason": reason}
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": status}})
        with pytest.raises(ActionError) as caught:
            Collect().run(ctx, params)
    assert f"account IN ('{OTHER}', '{CALLER}')" in sent[0] or (
        f"account IN ('{CALLER}', '{OTHER}')" in sent[0]
    )
    assert "region IN ('eu-west-1', 'us-east-1')" in sent[0]
    message = str(caught.value)
    assert "accounts: [...]" in message and "\n" not in message


def test_compare_over_a_scope_is_refused_in_one_line(world: World, tmp_path: Path) -> None:
    """R2#13: each target would compare the whole earlier review with its part of it."""
    from kmsir.actions.audit import Audit, AuditParams
    from kmsir.errors import UsageError

    ctx, _ = context(world.base)
    ctx.scope = (f"{CALLER}/eu-west-1",)
    params = AuditParams.model_validate({"all": True, "compare": str(tmp_path / "posture.json")})
    with pytest.raises(UsageError, match="compare is not supported over a run's accounts"):
        Audit().run(ctx, params)
