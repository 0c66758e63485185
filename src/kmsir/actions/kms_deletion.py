"""Key deletion: schedule it (with a multi-Region primary's replicas), cancel it.

A scheduled deletion is the one change here that cannot be undone once its waiting period is
over, so the preview warns and asks for the typed confirmation, and a multi-Region primary's
replicas are offered for deletion too (the primary waits in ``PendingReplicaDeletion`` until
they are gone). Both actions share the outcome helpers of ``kms_lifecycle``: "already" without
sending anything, and the key read again after the change.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kms_lifecycle import PENDING, changed, settled, undo_key
from kmsir.actions.kmskeys import (
    KeyInfo,
    KeyParams,
    describe,
    region_of,
    target,
    typed_confirmation,
)
from kmsir.aws import aws_errors
from kmsir.errors import AwsError
from kmsir.evidence.calls import Call
from kmsir.evidence.calls import describe as describe_call
from kmsir.evidence.entries import Decision


class ScheduleDeletionParams(KeyParams):
    """The key, the waiting period, and what to do with multi-Region replicas."""

    pending_window_days: int = Field(default=30, ge=7, le=30)
    replicas: Literal["ask", "include", "skip"] = "ask"


class ScheduleDeletion(Action[ScheduleDeletionParams]):
    """Schedule a key's deletion after 7-30 days (default 30); cancellable until then.

    ```yaml
    - id: delete
      action: kms.schedule-deletion
      with: {key: "{{ steps.snapshot.key_id }}", pending_window_days: 30}
    ```
    A multi-Region primary is not deleted while it has replicas (it waits in
    ``PendingReplicaDeletion``): with ``replicas: ask`` (default) the responder is offered to
    schedule each replica's deletion too; ``include`` or ``skip`` decide up front.
    Outputs: ``key_id``, ``state``, ``deletion_date``, ``replicas_scheduled``.
    """

    name = "kms.schedule-deletion"
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
        return [self._call(params.key, params)]

    @staticmethod
    def _call(key: str, params: ScheduleDeletionParams) -> Call:
        window = {"KeyId": key, "PendingWindowInDays": params.pending_window_days}
        return Call(service="kms", operation="ScheduleKeyDeletion", params=window)

    def preview(self, ctx: ActionContext, params: ScheduleDeletionParams) -> Preview:
        info = target(ctx, params.key, self.name)
        notes = []
        calls = [] if info.state in PENDING else [self._call(info.key_id, params)]
        if info.multi_region_role == "PRIMARY" and info.replica_arns:
            notes.append(
                f"WARNING: multi-Region primary with {len(info.replica_arns)} replica(s) "
                f"({', '.join(region_of(a) for a in info.replica_arns)}): its deletion waits "
                "until every replica is deleted (PendingReplicaDeletion)"
            )
            replica_calls = [self._call(arn, params) for arn in info.replica_arns]
            if params.replicas == "include":
                calls = replica_calls + calls
            elif params.replicas == "ask":
                notes.extend(
                    f"will ask whether to also call: {describe_call(c)}" for c in replica_calls
                )
        notes.append(
            f"deletion can be cancelled (kms.cancel-deletion) for {params.pending_window_days} "
            "days; after that the key and everything encrypted under it are gone for good"
        )
        return Preview(
            calls=tuple(calls),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}",
            typed=typed_confirmation(ctx, info),
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: ScheduleDeletionParams) -> Outcome:
        info = target(ctx, params.key, self.name)
        if info.state in PENDING:
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
        ctx.changing(info.summary)
        # replicas an earlier, unfinished attempt scheduled are pending now and skipped below
        sent = ctx.sent_by_earlier_attempt("ScheduleKeyDeletion")
        scheduled = [c["KeyId"] for c in sent if c.get("KeyId") != info.key_id]
        if info.multi_region_role == "PRIMARY" and info.replica_arns:
            scheduled += [a for a in self._replicas(ctx, info, params) if a not in scheduled]
        kms = ctx.clients.client("kms", info.region)
        _send(
            ctx,
            f"ScheduleKeyDeletion on {info.key_id}",
            lambda: kms.schedule_key_deletion(
                KeyId=info.key_id, PendingWindowInDays=params.pending_window_days
            ),
            lambda: describe(ctx, info.arn).state in PENDING,
        )
        return self._scheduled(changed(ctx, info, extra={"replicas_scheduled": scheduled}))

    def undo(self, done: Done) -> Undo | None:
        """Cancel the deletion (possible until its date; ``rollback`` checks the date)."""
        key = undo_key(done)
        if key is None:
            return None
        date = (done.after or {}).get("deletion_date") or done.outputs.get("deletion_date")
        summary = f"cancel the deletion of key {key}" + (f" set for {date}" if date else "")
        summary += "; the key comes back Disabled"
        if (done.before or {}).get("state") == "Enabled":
            summary += " (it was Enabled before the step: enable it again with kms.enable-key)"
        replicas = done.outputs.get("replicas_scheduled") or []
        if replicas:
            summary += f"; replicas scheduled too, cancel each: {', '.join(map(str, replicas))}"
        return Undo("kms.cancel-deletion", {"key": key}, summary)

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
            when += f"; replicas scheduled too (cancel each): {', '.join(scheduled)}"
        return Outcome(
            outputs=outcome.outputs,
            summary=f"{outcome.summary}; {when}",
            before=outcome.before,
            after=outcome.after,
            inverse_until=after.get("deletion_date"),
        )

    @staticmethod
    def _replicas(ctx: ActionContext, info: KeyInfo, params: ScheduleDeletionParams) -> list[str]:
        regions = [region_of(a) for a in info.replica_arns]
        choice: str = params.replicas
        earlier = ctx.earlier_decision()
        if choice == "ask" and earlier and earlier.question == "also delete replicas":
            choice = str(earlier.answer)  # answered before: not asked again
        if choice == "ask":
            answer = ctx.prompter.ask(
                f"{ctx.step_id}.replicas",
                f"{info.key_id} is a multi-Region primary with replicas in {', '.join(regions)}. "
                "It will wait in PendingReplicaDeletion until they are deleted. Schedule the "
                "replicas' deletion too?",
                ["include", "skip"],
            )
            ctx.artifacts.journal(
                Decision(
                    question="also delete replicas",
                    answer=answer.value,
                    by=answer.source,
                    reason=answer.reason,
                )
            )
            choice = answer.value
        if choice != "include":
            return []
        scheduled = []
        for arn in info.replica_arns:
            region = region_of(arn)
            replica = describe(ctx, arn, region=region)
            if replica.state in PENDING:
                continue
            kms = ctx.clients.client("kms", region)
            _send(
                ctx,
                f"ScheduleKeyDeletion on replica {arn}",
                functools.partial(
                    kms.schedule_key_deletion,
                    KeyId=arn,
                    PendingWindowInDays=params.pending_window_days,
                ),
                functools.partial(_pending, ctx, arn, region),
            )
            scheduled.append(arn)
        return scheduled


class CancelDeletion(Action[KeyParams]):
    """Cancel a scheduled deletion; the key comes back Disabled (enable it separately).

    ```yaml
    - id: cancel
      action: kms.cancel-deletion
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.cancel-deletion"
    params = KeyParams
    outputs = MappingProxyType({"key_id": "str", "state": "str", "deletion_date": "str|null"})
    permissions = ("kms:DescribeKey", "kms:CancelKeyDeletion")
    mutating = True

    def api_calls(self, params: KeyParams) -> list[Call]:
        return [self._call(params.key)]

    @staticmethod
    def _call(key: str) -> Call:
        return Call(service="kms", operation="CancelKeyDeletion", params={"KeyId": key})

    def preview(self, ctx: ActionContext, params: KeyParams) -> Preview:
        info = target(ctx, params.key, self.name)
        calls = (self._call(info.key_id),) if info.state in PENDING else ()
        return Preview(
            calls=calls,
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}"
            + (f", deletion on {info.deletion_date}" if info.deletion_date else ""),
            notes=("the key will be Disabled afterwards",),
        )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        info = target(ctx, params.key, self.name)
        if info.state not in PENDING:
            return settled(
                ctx, info, f"{info.key_id} is not pending deletion ({info.state}): nothing sent"
            )
        ctx.changing(info.summary)
        _send(
            ctx,
            f"CancelKeyDeletion on {info.key_id}",
            lambda: ctx.clients.client("kms", info.region).cancel_key_deletion(KeyId=info.key_id),
            lambda: describe(ctx, info.arn).state not in PENDING,
        )
        return changed(ctx, info)


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
