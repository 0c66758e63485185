"""``replicas: true`` on kms.schedule-deletion and kms.cancel-deletion: every Region's key of a
multi-Region key scheduled, and cancelled again, one decision, one call each.

AWS does not delete a primary that still has replicas: it waits in PendingReplicaDeletion
(ScheduleKeyDeletion API reference,
https://docs.aws.amazon.com/kms/latest/APIReference/API_ScheduleKeyDeletion.html, and
https://docs.aws.amazon.com/kms/latest/developerguide/multi-region-keys-delete.html).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from kmsir.actions.kms_deletion import CancelDeletion, ScheduleDeletion, ScheduleDeletionParams
from kmsir.actions.kmskeys import ReplicasParams
from kmsir.errors import ActionError
from kmsir.evidence.calls import describe
from kmsir.sandbox import Sandbox

from .fakes import context
from .replicakit import EAST, done, hr_world, state


@pytest.fixture
def hr() -> Iterator[tuple[Sandbox, str, str]]:
    """The policy-tampering world (``replicakit.hr_world``)."""
    with hr_world() as world:
        yield world


def test_schedule_deletion_of_a_primary_with_replicas_is_refused_without_replicas(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, _ = hr
    ctx, calls = context(sandbox.client_factory())
    params = ScheduleDeletionParams(key=key, pending_window_days=7)
    for attempt in (ScheduleDeletion().preview, ScheduleDeletion().run):
        with pytest.raises(ActionError) as refused:
            attempt(ctx, params)
        message = str(refused.value)
        assert "replicas in us-east-1 (Enabled)" in message
        assert "PendingReplicaDeletion" in message and "replicas: true" in message
    assert not [c for c in calls if c.operation == "ScheduleKeyDeletion"]
    assert state(sandbox, key) == "Enabled"


def test_schedule_deletion_with_replicas_schedules_every_region(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, replica = hr
    ctx, calls = context(sandbox.client_factory())
    params = ScheduleDeletionParams(key=key, pending_window_days=7, replicas=True)
    preview = ScheduleDeletion().preview(ctx, params)
    assert [describe(c) for c in preview.calls] == [
        f"kms:ScheduleKeyDeletion KeyId={replica} PendingWindowInDays=7",
        f"kms:ScheduleKeyDeletion KeyId={key} PendingWindowInDays=7",
    ]
    assert any(n.startswith("acts in 2 Regions") for n in preview.notes)
    assert "alias/hr-records" in preview.typed
    outcome = ScheduleDeletion().run(ctx, params)
    assert state(sandbox, key, EAST) == "PendingDeletion"
    # AWS deletes the primary only once its replicas are gone: it waits until then
    assert state(sandbox, key) == "PendingReplicaDeletion"
    assert outcome.outputs["replicas_scheduled"] == [replica]
    assert [c.region for c in calls if c.operation == "ScheduleKeyDeletion"] == [EAST, "eu-west-1"]
    assert outcome.before == {
        "key_id": key,
        "state": "Enabled",
        "deletion_date": None,
        "replicas": {replica: "Enabled"},
    }

    # the inverse cancels the deletion in every Region the step scheduled it, one call each
    undo = ScheduleDeletion().undo(done("delete", {"key": key, "replicas": True}, outcome))
    assert undo is not None and undo.action == "kms.cancel-deletion"
    assert undo.params == {"key": key, "replicas": True}
    assert f"and of its replicas {replica}" in undo.summary
    ctx, calls = context(sandbox.client_factory())
    cancel = ReplicasParams(**undo.params)
    preview = CancelDeletion().preview(ctx, cancel)
    assert [describe(c) for c in preview.calls] == [
        f"kms:CancelKeyDeletion KeyId={key}",
        f"kms:CancelKeyDeletion KeyId={replica}",
    ]
    assert any(n.startswith("acts in 2 Regions") for n in preview.notes)
    ctx.approved = preview
    cancelled = CancelDeletion().run(ctx, cancel)
    assert state(sandbox, key) == state(sandbox, key, EAST) == "Disabled"
    assert [(c.operation, c.region) for c in calls if not c.read_only] == [
        ("CancelKeyDeletion", "eu-west-1"),
        ("CancelKeyDeletion", EAST),
    ]
    assert cancelled.outputs["replicas_cancelled"] == [replica]
    assert cancelled.before == {
        **outcome.before,
        "state": "PendingReplicaDeletion",
        "replicas": {replica: "PendingDeletion"},
    }
    again = CancelDeletion().run(context(sandbox.client_factory())[0], cancel)
    assert again.status == "already" and again.outputs["replicas_cancelled"] == []


def test_the_undo_of_a_schedule_never_cancels_a_deletion_the_step_did_not_schedule(
    hr: tuple[Sandbox, str, str],
) -> None:
    """A replica already pending deletion before the step: the undo cancels the key only and
    names the replicas the step scheduled, never ``replicas: true``."""
    sandbox, key, replica = hr
    other = replica.replace("us-east-1", "ap-south-1")
    outcome = ScheduleDeletion().run(
        context(sandbox.client_factory())[0],
        ScheduleDeletionParams(key=key, pending_window_days=7, replicas=True),
    )
    # as a second replica, pending deletion before the step, would have been recorded
    before = {**(outcome.before or {}), "replicas": {replica: "Enabled", other: "PendingDeletion"}}
    record = dataclasses.replace(
        done("delete", {"key": key, "replicas": True}, outcome), before=before
    )
    undo = ScheduleDeletion().undo(record)
    assert undo is not None and undo.params == {"key": key}
    assert f"replicas scheduled too, cancel each: {replica}" in undo.summary
    assert f"pending deletion before the step, left so: {other}" in undo.summary

    # the key itself was pending deletion before: only the replica the step scheduled
    before = {**(outcome.before or {}), "state": "PendingReplicaDeletion"}
    undo = ScheduleDeletion().undo(dataclasses.replace(record, before=before))
    assert undo is not None and undo.params == {"key": replica}
    assert f"left so: {key}" in undo.summary


def test_a_primary_whose_replicas_are_pending_deletion_may_be_scheduled_alone(
    hr: tuple[Sandbox, str, str],
) -> None:
    sandbox, key, replica = hr
    ctx, _ = context(sandbox.client_factory())
    # a replica alone may always be scheduled (its primary keeps the data decryptable)
    ScheduleDeletion().run(ctx, ScheduleDeletionParams(key=replica, pending_window_days=7))
    assert state(sandbox, key, EAST) == "PendingDeletion"
    fresh = context(sandbox.client_factory())[0]
    ScheduleDeletion().run(fresh, ScheduleDeletionParams(key=key, pending_window_days=7))
    assert state(sandbox, key) == "PendingReplicaDeletion"


@pytest.mark.parametrize("old", ["ask", "include", "skip"])
def test_an_earlier_releases_replicas_choice_is_refused_with_the_new_spelling(old: str) -> None:
    """kms.schedule-deletion took ``replicas: ask|include|skip`` before ``replicas`` became
    one yes/no for the three actions: a playbook still saying so is told what to write."""
    with pytest.raises(ValueError, match=f"replicas: {old} is gone: write replicas: true"):
        ScheduleDeletionParams(key="alias/payments-prod", replicas=old)
