"""``replicas: true`` on kms.disable-key and kms.quarantine (and their inverses): the primary
and every replica of a multi-Region key, one decision, one call each, each journaled. The
deletion's: tests/test_actions_replicas_deletion.py.

AWS shares no key state and no key policy between a primary and its replicas: each is its own
KMS key in its own Region ("Multi-Region keys in AWS KMS",
https://docs.aws.amazon.com/kms/latest/developerguide/multi-region-keys-overview.html), so
containing one Region leaves the others usable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir.actions.kms_lifecycle import DisableKey, EnableKey
from kmsir.actions.kms_policy import (
    Quarantine,
    QuarantineParams,
    RestorePolicy,
    RestorePolicyParams,
)
from kmsir.actions.kms_snapshot import Snapshot, SnapshotParams
from kmsir.actions.kmskeys import ReplicasParams
from kmsir.errors import ActionError
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.calls import describe
from kmsir.sandbox import Sandbox

from .conftest import load_playbook, played, run_playbook
from .fakes import MemoryArtifacts, context
from .replicakit import EAST, done, hr_world, policy, state
from .test_rollback import roll_back


@pytest.fixture
def hr() -> Iterator[tuple[Sandbox, str, str]]:
    """The policy-tampering world (``replicakit.hr_world``)."""
    with hr_world() as world:
        yield world


def test_disable_with_replicas_disables_every_region_one_call_each(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, replica = hr
    ctx, calls = context(sandbox.client_factory())
    params = ReplicasParams(key="alias/hr-records", replicas=True)
    preview = DisableKey().preview(ctx, params)
    assert [describe(c) for c in preview.calls] == [
        f"kms:DisableKey KeyId={key}",
        f"kms:DisableKey KeyId={replica}",
    ]
    assert (
        "acts in 2 Regions, one call each: eu-west-1 (primary, Enabled), us-east-1 (replica, "
        "Enabled)"
    ) in preview.notes
    assert replica in preview.target  # the lock of every key changed is taken
    ctx.approved = preview
    outcome = DisableKey().run(ctx, params)

    assert state(sandbox, key) == state(sandbox, key, EAST) == "Disabled"
    sent = [c for c in calls if not c.read_only]
    assert [(c.identity, c.region) for c in sent] == [
        (preview.calls[0].identity, "eu-west-1"),
        (preview.calls[1].identity, EAST),
    ]
    assert outcome.outputs["replicas_changed"] == [replica]
    before = {"key_id": key, "state": "Enabled", "deletion_date": None}
    assert outcome.before == {**before, "replicas": {replica: "Enabled"}}
    assert outcome.after == {**before, "state": "Disabled", "replicas": {replica: "Disabled"}}
    # the state before the change is journaled before the first call
    assert ("before-change", {"before": outcome.before}) in ctx.artifacts.events  # type: ignore[attr-defined]

    again = DisableKey().run(context(sandbox.client_factory())[0], params)
    assert again.status == "already" and "and its replicas were already Disabled" in again.summary

    # the inverse: enable every Region's key the step disabled, at once
    undo = DisableKey().undo(
        done("disable", {"key": "alias/hr-records", "replicas": True}, outcome)
    )
    assert undo is not None and undo.action == "kms.enable-key"
    assert undo.params == {"key": key, "replicas": True}
    EnableKey().run(context(sandbox.client_factory())[0], ReplicasParams(**undo.params))
    assert state(sandbox, key) == state(sandbox, key, EAST) == "Enabled"


def test_without_replicas_only_one_region_and_from_a_replica_the_primary_too(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, replica = hr
    ctx, _ = context(sandbox.client_factory())
    DisableKey().run(ctx, ReplicasParams(key=key))
    assert (state(sandbox, key), state(sandbox, key, EAST)) == ("Disabled", "Enabled")
    EnableKey().run(ctx, ReplicasParams(key=key))

    # named by the replica's ARN: the replica is the key, the primary one of the others
    outcome = DisableKey().run(
        context(sandbox.client_factory())[0], ReplicasParams(key=replica, replicas=True)
    )
    assert (state(sandbox, key), state(sandbox, key, EAST)) == ("Disabled", "Disabled")
    assert outcome.outputs["replicas_changed"] == [
        f"arn:aws:kms:eu-west-1:{replica.split(':')[4]}:key/{key}"
    ]


def test_undo_leaves_alone_a_replica_that_was_disabled_before(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, _ = hr
    sandbox.session().client("kms", region_name=EAST).disable_key(KeyId=key)
    ctx, _ = context(sandbox.client_factory())
    params = ReplicasParams(key=key, replicas=True)
    assert [describe(c) for c in DisableKey().preview(ctx, params).calls] == [
        f"kms:DisableKey KeyId={key}"
    ]
    outcome = DisableKey().run(ctx, params)
    assert outcome.outputs["replicas_changed"] == []
    undo = DisableKey().undo(done("disable", {"key": key, "replicas": True}, outcome))
    assert undo is not None and undo.params == {"key": key}  # not the replica


def test_replicas_true_is_refused_on_an_aws_managed_key(hr: tuple[Sandbox, str, str]) -> None:
    sandbox, _, _ = hr
    ctx, calls = context(sandbox.client_factory())
    with pytest.raises(ActionError, match="AWS-managed key"):
        DisableKey().preview(ctx, ReplicasParams(key="alias/aws/s3", replicas=True))
    assert all(c.read_only for c in calls)


def test_check_mode_shows_every_region_and_changes_nothing(
    hr: tuple[Sandbox, str, str], tmp_path: Path
) -> None:
    sandbox, key, replica = hr
    playbook = tmp_path / "contain.yaml"
    playbook.write_text(
        "id: contain\ntitle: Contain\nsteps:\n"
        "  - id: disable\n    action: kms.disable-key\n"
        "    with: {key: alias/hr-records, replicas: true}\n"
    )
    result = run_playbook(
        load_playbook(playbook), sandbox.client_factory(), tmp_path / "ev", mode="check"
    )
    assert result.status == "succeeded", result.error
    lines = [json.loads(x) for x in (result.bundle / JOURNAL).read_text().splitlines()]
    (check,) = [e["data"] for e in lines if e["type"] == "check-mode"]
    assert [c["params"]["KeyId"] for c in check["would_call"]] == [key, replica]
    assert state(sandbox, key) == state(sandbox, key, EAST) == "Enabled"


def test_the_policy_tampering_playbook_quarantines_every_replica_and_rollback_restores_them(
    tmp_path: Path,
) -> None:
    with played("policy-tampering", tmp_path) as (sandbox, result):
        key = sandbox.keys["hr"]["id"]
        (replica,) = sandbox.keys["hr"]["replicas"]
        view = read_journal(result.bundle / JOURNAL).view()
        step = view.steps["quarantine"]
        assert step.outputs["replicas_changed"] == [replica]
        sid = "kmsir-quarantine-INC-test"
        for region in ("eu-west-1", EAST):  # each Region's own policy has the Deny
            assert sid in [s.get("Sid") for s in policy(sandbox, key, region)["Statement"]]
        kept = {p.relative_to(result.bundle).as_posix() for p in result.bundle.rglob("*.json")}
        folder = next(p for p in kept if p.endswith("-quarantine/policy-before.json"))
        assert folder.replace("policy-before", "us-east-1/policy-before") in kept
        # the report's hand-over no longer asks the responder to quarantine the replica
        recovery = view.steps["recovery"].outputs["text"]
        assert (
            f"The quarantine covered the replicas too, each under its own key policy: {replica}."
            in recovery
        )
        assert "this Region only" not in recovery

        rolled = roll_back(result.bundle, sandbox.client_factory())
        undo = rolled.steps["undo-quarantine"]
        assert undo.action == "kms.restore-policy" and (undo.params or {})["replicas"] is True
        assert undo.outputs["replicas_changed"] == [replica]
        for region, name in (("eu-west-1", "policy-before"), (EAST, "us-east-1/policy-before")):
            before = json.loads((result.bundle / folder.replace("policy-before", name)).read_text())
            assert policy(sandbox, key, region) == json.loads(before["Policy"])


class Kept(MemoryArtifacts):
    """The artifacts of a later step, reading what step ``earlier_step`` kept in ``files``."""

    def __init__(self, earlier_step: str, kept: dict[str, bytes]) -> None:
        super().__init__()
        self.earlier_step, self.kept = earlier_step, kept

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return (self.kept if step_id == self.earlier_step else self.files).get(name)


def test_each_region_gets_back_its_own_policy(hr: tuple[Sandbox, str, str]) -> None:
    """The key id is the same in every Region: a replica is never given the policy a step
    kept for the primary."""
    sandbox, key, replica = hr
    original = {r: policy(sandbox, key, r) for r in ("eu-west-1", EAST)}
    assert original["eu-west-1"] != original[EAST]  # the tampered one is the primary's
    snap, _ = context(sandbox.client_factory(), "snap")
    Snapshot().run(snap, SnapshotParams(key=key))
    glass = ["arn:aws:sts::123456789012:user/moto"]  # the sandbox's caller
    ctx, _ = context(sandbox.client_factory(), "quarantine")
    Quarantine().run(ctx, QuarantineParams(key=key, break_glass=glass, replicas=True))
    kept = ctx.artifacts.files  # type: ignore[attr-defined]
    assert {"policy-before.json", "us-east-1/policy-before.json"} <= set(kept)

    # the replica alone, named by its ARN, from the quarantine step: its own policy
    alone, _ = context(sandbox.client_factory(), "restore")
    alone.artifacts = Kept("quarantine", kept)
    RestorePolicy().run(
        alone, RestorePolicyParams.model_validate({"key": replica, "from": "quarantine"})
    )
    assert policy(sandbox, key, EAST) == original[EAST]
    assert policy(sandbox, key) != original["eu-west-1"]  # still quarantined

    # every Region from the snapshot step (its replica-us-east-1-policy-default.json)
    every, _ = context(sandbox.client_factory(), "restore")
    every.artifacts = Kept("snap", snap.artifacts.files)  # type: ignore[attr-defined]
    done = RestorePolicy().run(
        every, RestorePolicyParams.model_validate({"key": key, "from": "snap", "replicas": True})
    )
    assert {r: policy(sandbox, key, r) for r in original} == original
    assert done.outputs["replicas_changed"] == []  # the replica was already as kept


def test_a_resumed_step_finishes_the_regions_the_first_attempt_did_not_reach(
    hr: tuple[Sandbox, str, str],
) -> None:
    """The run stopped after the primary's DisableKey: on resume only the replica is sent,
    and the step's record is the state before the first attempt."""
    from kmsir.actions.base import EarlierAttempt
    from kmsir.evidence.calls import Call

    sandbox, key, replica = hr
    sandbox.session().client("kms").disable_key(KeyId=key)  # what the first attempt did
    first: dict[str, Any] = {"key_id": key, "state": "Enabled", "deletion_date": None}
    first["replicas"] = {replica: "Enabled"}
    ctx, calls = context(sandbox.client_factory())
    ctx.earlier_attempt = EarlierAttempt(
        before=first, sent=(Call(service="kms", operation="DisableKey", params={"KeyId": key}),)
    )
    outcome = DisableKey().run(ctx, ReplicasParams(key=key, replicas=True))
    assert [c.params["KeyId"] for c in calls if not c.read_only] == [replica]
    assert outcome.before == first and outcome.outputs["replicas_changed"] == [replica]
    assert state(sandbox, key, EAST) == "Disabled"


def test_a_resumed_step_whose_calls_all_went_out_keeps_the_replicas_for_the_rollback(
    hr: tuple[Sandbox, str, str],
) -> None:
    """The run stopped after both DisableKey calls were sent: on resume nothing is sent, the
    replica is still the step's change, and its undo enables every Region again."""
    from kmsir.actions.base import EarlierAttempt
    from kmsir.evidence.calls import Call

    sandbox, key, replica = hr
    sandbox.session().client("kms").disable_key(KeyId=key)  # what the first attempt did
    sandbox.session().client("kms", region_name=EAST).disable_key(KeyId=key)
    first: dict[str, Any] = {"key_id": key, "state": "Enabled", "deletion_date": None}
    first["replicas"] = {replica: "Enabled"}
    ctx, calls = context(sandbox.client_factory())
    ctx.earlier_attempt = EarlierAttempt(
        before=first,
        sent=(
            Call(service="kms", operation="DisableKey", params={"KeyId": key}),
            Call(service="kms", operation="DisableKey", params={"KeyId": replica}),
        ),
    )
    params = ReplicasParams(key=key, replicas=True)
    outcome = DisableKey().run(ctx, params)
    assert [c for c in calls if not c.read_only] == []
    assert outcome.status != "already"
    assert outcome.before == first and outcome.outputs["replicas_changed"] == [replica]
    assert outcome.after == {**first, "state": "Disabled", "replicas": {replica: "Disabled"}}
    assert "eu-west-1: Enabled -> Disabled; us-east-1: Enabled -> Disabled" in outcome.summary

    undo = DisableKey().undo(done("disable", {"key": key, "replicas": True}, outcome))
    assert undo is not None and undo.params == {"key": key, "replicas": True}
    EnableKey().run(context(sandbox.client_factory())[0], ReplicasParams(**undo.params))
    assert state(sandbox, key) == state(sandbox, key, EAST) == "Enabled"
