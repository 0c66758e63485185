"""Key deletion: schedule it (with a multi-Region key's replicas), cancel it.

A scheduled deletion is the one change here that cannot be undone once its waiting period is
over, so the preview warns and asks for the typed confirmation. A multi-Region primary with
live replicas is refused unless ``replicas: true`` schedules them too: AWS would leave it in
``PendingReplicaDeletion`` until they are gone, with the replicas still decrypting. Both
actions share the outcome helpers of ``kms_lifecycle``: "already" without sending anything,
and the key read again after the change.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from pydantic import Field

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kms_lifecycle import PENDING, changed, settled, undo_key
from kmsir.actions.kmskeys import (
    KeyInfo,
    ReplicasParams,
    call_key,
    describe,
    members,
    regions_note,
    target,
    typed_confirmation,
)
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call


class ScheduleDeletionParams(ReplicasParams):
    """The key, the waiting period, and ``replicas: true`` to schedule the deletion of the
    primary and every replica of a multi-Region key."""

    pending_window_days: int = Field(default=30, ge=7, le=30)


class ScheduleDeletion(Action[ScheduleDeletionParams]):
    """Schedule a key's deletion after 7-30 days (default 30); cancellable until then.

    ```yaml
    - id: delete
      action: kms.schedule-deletion
      with: {key: "{{ steps.snapshot.key_id }}", pending_window_days: 30}
    ```
    AWS does not delete a multi-Region primary while it has replicas: it waits in
    ``PendingReplicaDeletion``, unusable and with no deletion date, until each is deleted. So a
    primary whose replicas are not pending deletion is refused unless ``replicas: true``, which
    schedules the primary and every replica (one call each, under one approval).
    Outputs: ``key_id``, ``state``, ``deletion_date``, ``replicas_scheduled``.
    """

    name = "kms.schedule-deletion"
    high_impact = True  # the key and all it encrypts go at the date
    params = ScheduleDeletionParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "state": "str",
            "deletion_date": "str|null",
            "replicas_scheduled": "list[str]",
        }
    )
    permissions = ("kms:DescribeKey", "kms:ListAliases", "kms:ScheduleKeyDeletion")
    mutating = True
    inverse = "kms.cancel-deletion"

    def api_calls(self, params: ScheduleDeletionParams) -> list[Call]:
        calls = [self._call(params.key, params)]
        if params.replicas:
            calls.insert(0, self._call("<each other Region's key ARN>", params))
        return calls

    @staticmethod
    def _call(key: str, params: ScheduleDeletionParams) -> Call:
        window = {"KeyId": key, "PendingWindowInDays": params.pending_window_days}
        return Call(service="kms", operation="ScheduleKeyDeletion", params=window)

    def _keys(self, ctx: ActionContext, params: ScheduleDeletionParams) -> list[KeyInfo]:
        """The key, then with ``replicas`` the other Regions' keys; a multi-Region primary
        with replicas not yet pending deletion is refused without ``replicas: true``."""
        info = target(ctx, params.key, self.name)
        if params.replicas:
            return members(ctx, info, True)
        if info.multi_region_role == "PRIMARY" and info.replica_arns and info.state not in PENDING:
            replicas = [describe(ctx, arn) for arn in info.replica_arns]
            live = [f"{r.region} ({r.state})" for r in replicas if r.state not in PENDING]
            if live:
                raise ActionError(
                    f"{self.name} refused on {info.key_id}: it is a multi-Region primary with "
                    f"replicas in {', '.join(live)}. AWS does not delete a primary while it has "
                    "replicas: it would wait in PendingReplicaDeletion, unusable and with no "
                    "deletion date, until each replica is deleted, and the replicas would keep "
                    "decrypting its data. Set replicas: true to schedule the primary and every "
                    "replica, or schedule the replicas' deletion first"
                )
        return [info]

    def preview(self, ctx: ActionContext, params: ScheduleDeletionParams) -> Preview:
        keys = self._keys(ctx, params)
        info = keys[0]
        todo = [k for k in [*keys[1:], info] if k.state not in PENDING]
        notes = []
        if params.replicas:
            notes.append(regions_note(keys))
            notes += [f"{k.arn} is {k.state}: left alone" for k in keys[1:] if k.state in PENDING]
            if any(k.multi_region_role == "PRIMARY" for k in keys[1:]):
                notes.append(
                    "the primary waits in PendingReplicaDeletion until every replica is "
                    "deleted; its own waiting period starts then"
                )
        elif info.multi_region_role == "PRIMARY" and info.replica_arns:
            notes.append(
                "its replicas are all pending deletion already: the primary waits in "
                "PendingReplicaDeletion until they are deleted"
            )
        notes.append(
            f"deletion can be cancelled (kms.cancel-deletion) for {params.pending_window_days} "
            "days; after that the key and everything encrypted under it are gone for good"
        )
        return Preview(
            calls=tuple(self._call(call_key(k, info), params) for k in todo),
            target="; ".join(f"{k.key_id} ({k.arn})" for k in keys),
            state="; ".join(f"{k.region}: key state {k.state}" for k in keys)
            if len(keys) > 1
            else f"key state {info.state}",
            typed=typed_confirmation(ctx, info),
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: ScheduleDeletionParams) -> Outcome:
        keys = self._keys(ctx, params)
        info, others = keys[0], keys[1:]
        todo = [k for k in others if k.state not in PENDING]
        if info.state in PENDING and not todo:
            outcome = settled(
                ctx,
                info,
                f"{info.key_id} was already pending deletion on {info.deletion_date}: nothing sent",
                until=info.deletion_date,
            )
            if outcome.status == "already":  # the outputs every path gives
                return dataclasses.replace(
                    outcome, outputs={**outcome.outputs, "replicas_scheduled": []}
                )
            # scheduled by the calls sent before the interruption: report them as made
            sent = ctx.sent_by_earlier_attempt("ScheduleKeyDeletion")
            replicas = [c["KeyId"] for c in sent if c.get("KeyId") != info.key_id]
            outputs = {**outcome.outputs, "replicas_scheduled": replicas}
            return self._scheduled(dataclasses.replace(outcome, outputs=outputs))
        # a resumed attempt: the state before the first attempt's calls is the step's (the
        # undo reads in it which Regions were pending deletion before the step)
        before = ctx.changed_by_earlier_attempt() or {
            **info.summary,
            **({"replicas": {k.arn: k.state for k in others}} if others else {}),
        }
        ctx.changing(before)
        # replicas an earlier, unfinished attempt scheduled are pending now: not in ``todo``
        sent = ctx.sent_by_earlier_attempt("ScheduleKeyDeletion")
        scheduled = [c["KeyId"] for c in sent if c.get("KeyId") != info.key_id]
        for key in todo:  # the other Regions' keys first: a primary waits for its replicas
            replica = ctx.clients.client("kms", key.region)
            _send(
                ctx,
                f"ScheduleKeyDeletion on {key.arn}",
                functools.partial(
                    replica.schedule_key_deletion,
                    KeyId=key.arn,
                    PendingWindowInDays=params.pending_window_days,
                ),
                functools.partial(_pending, ctx, key.arn, key.region),
            )
            scheduled += [key.arn] if key.arn not in scheduled else []
        if info.state not in PENDING:
            kms = ctx.clients.client("kms", info.region)
            _send(
                ctx,
                f"ScheduleKeyDeletion on {info.key_id}",
                lambda: kms.schedule_key_deletion(
                    KeyId=info.key_id, PendingWindowInDays=params.pending_window_days
                ),
                lambda: describe(ctx, info.arn).state in PENDING,
            )
        outcome = changed(ctx, info, extra={"replicas_scheduled": scheduled})
        return self._scheduled(dataclasses.replace(outcome, before=before))

    def undo(self, done: Done) -> Undo | None:
        """Cancel the deletion (possible until its date; ``rollback`` checks the date); with
        replicas the step scheduled, on each of them too (``replicas: true`` when no other
        Region's key was pending deletion before the step, else they are named to cancel by
        hand: a rollback never cancels a deletion the step did not schedule)."""
        key = undo_key(done)
        if key is None:
            return None
        before = done.before or {}
        date = (done.after or {}).get("deletion_date") or done.outputs.get("deletion_date")
        summary = f"cancel the deletion of key {key}" + (f" set for {date}" if date else "")
        summary += "; the key comes back Disabled"
        if before.get("state") == "Enabled":
            summary += " (it was Enabled before the step: enable it again with kms.enable-key)"
        params: dict[str, Any] = {"key": key}
        replicas = [str(a) for a in done.outputs.get("replicas_scheduled") or []]
        if not replicas:
            return Undo("kms.cancel-deletion", params, summary)
        earlier = [a for a, s in (before.get("replicas") or {}).items() if s in PENDING]
        if before.get("state") in PENDING:  # only replicas were scheduled: cancel them
            params = {"key": replicas[0]}
            summary = f"cancel the deletion of replica {replicas[0]}; it comes back Disabled"
            replicas = replicas[1:]
        elif not earlier:
            params["replicas"] = True
            summary += f", and of its replicas {', '.join(replicas)}"
            replicas = []
        if replicas:
            summary += f"; replicas scheduled too, cancel each: {', '.join(replicas)}"
        if earlier or before.get("state") in PENDING:
            was = [*earlier, *([key] if before.get("state") in PENDING else [])]
            summary += f" (pending deletion before the step, left so: {', '.join(was)})"
        return Undo("kms.cancel-deletion", params, summary)

    @staticmethod
    def _scheduled(outcome: Outcome) -> Outcome:
        """The outcome with the deletion date and how to undo it in the summary."""
        after = outcome.after or {}
        scheduled = outcome.outputs.get("replicas_scheduled") or []
        when = (
            f"deletion on {after['deletion_date']}, cancellable until then"
            if after.get("deletion_date")
            else "deletion waits until every replica is deleted; cancellable until then"
        )
        if scheduled:
            when += f"; replicas scheduled too: {', '.join(scheduled)}"
        return Outcome(
            outputs=outcome.outputs,
            summary=f"{outcome.summary}; {when}",
            before=outcome.before,
            after=outcome.after,
            inverse_until=after.get("deletion_date"),
        )


class CancelDeletion(Action[ReplicasParams]):
    """Cancel a scheduled deletion; the key comes back Disabled (enable it separately).

    ```yaml
    - id: cancel
      action: kms.cancel-deletion
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    ``replicas: true`` cancels it on every Region's key of a multi-Region key that is pending
    deletion (one call each, under one approval): AWS shares no key state between them, and
    this is what undoes ``kms.schedule-deletion`` with ``replicas: true``.
    Outputs: ``key_id``, ``state``, ``deletion_date``, ``replicas_cancelled``.
    """

    name = "kms.cancel-deletion"
    params = ReplicasParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "state": "str",
            "deletion_date": "str|null",
            "replicas_cancelled": "list[str]",
        }
    )
    permissions = ("kms:DescribeKey", "kms:CancelKeyDeletion")
    mutating = True

    def api_calls(self, params: ReplicasParams) -> list[Call]:
        calls = [self._call(params.key)]
        if params.replicas:
            calls.append(self._call("<each other Region's key ARN pending deletion>"))
        return calls

    @staticmethod
    def _call(key: str) -> Call:
        return Call(service="kms", operation="CancelKeyDeletion", params={"KeyId": key})

    def preview(self, ctx: ActionContext, params: ReplicasParams) -> Preview:
        keys = members(ctx, target(ctx, params.key, self.name), params.replicas)
        info = keys[0]
        notes = [regions_note(keys)] if params.replicas else []
        notes += [f"{k.arn} is {k.state}: left alone" for k in keys[1:] if k.state not in PENDING]
        notes.append(
            "the key will be Disabled afterwards"
            if len(keys) == 1
            else "each key cancelled will be Disabled afterwards"
        )
        return Preview(
            calls=tuple(self._call(call_key(k, info)) for k in keys if k.state in PENDING),
            target="; ".join(f"{k.key_id} ({k.arn})" for k in keys),
            state="; ".join(f"{k.region}: key state {k.state}" for k in keys)
            if len(keys) > 1
            else f"key state {info.state}"
            + (f", deletion on {info.deletion_date}" if info.deletion_date else ""),
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: ReplicasParams) -> Outcome:
        keys = members(ctx, target(ctx, params.key, self.name), params.replicas)
        info, others = keys[0], keys[1:]
        todo = [k for k in keys if k.state in PENDING]
        # replicas an earlier, unfinished attempt cancelled are no longer pending: the step's
        sent = {str(c.get("KeyId")) for c in ctx.sent_by_earlier_attempt("CancelKeyDeletion")}
        cancelled = [k.arn for k in others if k.arn in sent]
        if not todo:
            outcome = settled(
                ctx, info, f"{info.key_id} is not pending deletion ({info.state}): nothing sent"
            )
            outputs = {**outcome.outputs, "replicas_cancelled": cancelled}
            if outcome.status == "already" and others:
                summary = f"{outcome.summary}; nor are its replicas"
                return dataclasses.replace(outcome, outputs=outputs, summary=summary)
            return dataclasses.replace(outcome, outputs=outputs)
        before = ctx.changed_by_earlier_attempt() or {
            **info.summary,
            **({"replicas": {k.arn: k.state for k in others}} if others else {}),
        }
        ctx.changing(before)
        for key in todo:
            kms = ctx.clients.client("kms", key.region)
            _send(
                ctx,
                f"CancelKeyDeletion on {call_key(key, info)}",
                functools.partial(kms.cancel_key_deletion, KeyId=call_key(key, info)),
                functools.partial(_not_pending, ctx, key.arn, key.region),
            )
            cancelled += [key.arn] if key is not info and key.arn not in cancelled else []
        outcome = changed(ctx, info, extra={"replicas_cancelled": cancelled})
        summary = outcome.summary + (
            f"; cancelled on its replicas too: {', '.join(cancelled)}" if cancelled else ""
        )
        return dataclasses.replace(outcome, before=before, summary=summary)


# -- helpers -------------------------------------------------------------------------------


def _send(
    ctx: ActionContext, what: str, call: Callable[[], Any], took_effect: Callable[[], bool]
) -> None:
    """Send a state change that AWS refuses to repeat (KMSInvalidStateException: the key is
    no longer in a state that allows it).

    When that refusal answers botocore's retry of the call, and the key is now as the call
    wanted, the earlier attempt was carried out and only its response was lost: the change
    is made, not failed.
    """
    try:
        with aws_errors(what) as sent:
            call()
    except AwsError as exc:
        if not (sent.retried and exc.code == "KMSInvalidStateException" and took_effect()):
            raise


def _pending(ctx: ActionContext, arn: str, region: str) -> bool:
    return describe(ctx, arn, region=region).state in PENDING


def _not_pending(ctx: ActionContext, arn: str, region: str) -> bool:
    return describe(ctx, arn, region=region).state not in PENDING
