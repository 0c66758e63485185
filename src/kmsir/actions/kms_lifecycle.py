"""Key state changes: disable/enable, schedule/cancel deletion, tag (rotation: kms_rotation).

Each resolves the key, refuses AWS-managed keys, records "already in desired state" without
sending anything, and reads the key again after changing it so the journal holds the state
AWS reports, not the one we hoped for.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Preview
from kmsir.actions.kmskeys import (
    KeyInfo,
    KeyParams,
    describe,
    list_all,
    region_of,
    target,
    typed_confirmation,
)
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call
from kmsir.evidence.calls import describe as describe_call
from kmsir.evidence.entries import Decision

PENDING = ("PendingDeletion", "PendingReplicaDeletion")


class _StateChange(Action[KeyParams]):
    """One call, one desired end state (DisableKey, EnableKey)."""

    operation: str
    desired: str

    def api_calls(self, params: KeyParams) -> list[Call]:
        return [self._call(params.key)]

    def _call(self, key: str) -> Call:
        return Call(service="kms", operation=self.operation, params={"KeyId": key})

    def _target(self, ctx: ActionContext, params: KeyParams) -> KeyInfo:
        info = target(ctx, params.key, self.name)
        if info.state in PENDING:
            raise ActionError(
                f"{self.operation} refused on {info.key_id}: the key is {info.state} "
                f"(deletion on {info.deletion_date or 'hold for its replicas'}); cancel the "
                "deletion first"
            )
        return info

    def preview(self, ctx: ActionContext, params: KeyParams) -> Preview:
        info = self._target(ctx, params)
        calls = () if info.state == self.desired else (self._call(info.key_id),)
        return Preview(
            calls=calls, target=f"{info.key_id} ({info.arn})", state=f"key state {info.state}"
        )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        info = self._target(ctx, params)
        if info.state == self.desired:
            return _settled(ctx, info, f"{info.key_id} was already {self.desired}: nothing sent")
        ctx.changing(info.summary)
        from botocore import xform_name  # botocore is imported when a call is made

        kms = ctx.clients.client("kms", info.region)
        with aws_errors(f"{self.operation} on {info.key_id}"):
            getattr(kms, xform_name(self.operation))(KeyId=info.key_id)
        return _changed(ctx, info)


class DisableKey(_StateChange):
    """Disable a key: every cryptographic use fails until it is enabled again.

    ```yaml
    - id: disable
      action: kms.disable-key
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.disable-key"
    params = KeyParams
    permissions = ("kms:DescribeKey", "kms:DisableKey")
    mutating = True
    inverse = "kms.enable-key"
    operation = "DisableKey"
    desired = "Disabled"


class EnableKey(_StateChange):
    """Enable a disabled key (the inverse of ``kms.disable-key``).

    ```yaml
    - id: enable
      action: kms.enable-key
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.enable-key"
    params = KeyParams
    permissions = ("kms:DescribeKey", "kms:EnableKey")
    mutating = True
    inverse = "kms.disable-key"
    operation = "EnableKey"
    desired = "Enabled"


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
            outcome = _settled(
                ctx,
                info,
                f"{info.key_id} was already pending deletion on {info.deletion_date}: nothing sent",
                until=info.deletion_date,
            )
            if outcome.status == "already":
                return outcome
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
        return self._scheduled(_changed(ctx, info, extra={"replicas_scheduled": scheduled}))

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
            return _settled(
                ctx, info, f"{info.key_id} is not pending deletion ({info.state}): nothing sent"
            )
        ctx.changing(info.summary)
        _send(
            ctx,
            f"CancelKeyDeletion on {info.key_id}",
            lambda: ctx.clients.client("kms", info.region).cancel_key_deletion(KeyId=info.key_id),
            lambda: describe(ctx, info.arn).state not in PENDING,
        )
        return _changed(ctx, info)


class TagParams(KeyParams):
    """Tags to set; by default ``kmsir-incident: <incident id>``."""

    tags: dict[str, str] | None = Field(default=None, max_length=50)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, tag in (value or {}).items():
            if not 1 <= len(key) <= 128 or len(tag) > 256 or key.lower().startswith("aws:"):
                raise ValueError(
                    f"tag {key[:40]!r}: keys 1-128 characters, not 'aws:'; values up to 256"
                )
        return value


class TagKey(Action[TagParams]):
    """Tag a key (by default with the incident id) so everyone sees it is under investigation.

    ```yaml
    - id: tag
      action: kms.tag-key
      with: {key: "{{ steps.snapshot.key_id }}", tags: {incident: "{{ incident.id }}"}}
    ```
    """

    name = "kms.tag-key"
    params = TagParams
    permissions = ("kms:DescribeKey", "kms:ListResourceTags", "kms:TagResource")
    mutating = True

    @staticmethod
    def _tags(ctx: ActionContext, params: TagParams) -> dict[str, str]:
        return params.tags if params.tags is not None else {"kmsir-incident": ctx.run.incident_id}

    def api_calls(self, params: TagParams) -> list[Call]:
        return [Call(service="kms", operation="TagResource", params={"KeyId": params.key})]

    def preview(self, ctx: ActionContext, params: TagParams) -> Preview:
        info = target(ctx, params.key, self.name)
        wanted = self._tags(ctx, params)
        current = _tags(ctx, info)
        missing = {k: v for k, v in wanted.items() if current.get(k) != v}
        tags = [{"TagKey": k, "TagValue": v} for k, v in missing.items()]  # as ``run`` sends
        tagging = {"KeyId": info.key_id, "Tags": tags}
        calls = (Call(service="kms", operation="TagResource", params=tagging),) if missing else ()
        return Preview(calls=calls, target=f"{info.key_id} ({info.arn})", state=f"tags {current}")

    def run(self, ctx: ActionContext, params: TagParams) -> Outcome:
        info = target(ctx, params.key, self.name)
        wanted = self._tags(ctx, params)
        current = _tags(ctx, info)
        missing = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not missing:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is None:
                return _already(info, f"{info.key_id} already tagged {wanted}: nothing sent")
            was = earlier.get("tags") or {}
            made = {k: v for k, v in wanted.items() if was.get(k) != v}
            return Outcome(
                outputs={"key_id": info.key_id, "tags": current},
                summary=f"{info.key_id}: tagged {made}",
                before=earlier,
                after={"key_id": info.key_id, "tags": current},
            )
        ctx.changing({"key_id": info.key_id, "tags": current})
        with aws_errors(f"TagResource on {info.key_id}"):
            ctx.clients.client("kms", info.region).tag_resource(
                KeyId=info.key_id, Tags=[{"TagKey": k, "TagValue": v} for k, v in missing.items()]
            )
        after = _tags(ctx, info)
        return Outcome(
            outputs={"key_id": info.key_id, "tags": after},
            summary=f"{info.key_id}: tagged {missing}",
            before={"key_id": info.key_id, "tags": current},
            after={"key_id": info.key_id, "tags": after},
        )


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


def _already(info: KeyInfo, summary: str, *, until: str | None = None) -> Outcome:
    return Outcome(
        outputs={"key_id": info.key_id, "state": info.state, "deletion_date": info.deletion_date},
        summary=summary,
        status="already",
        before=info.summary,
        after=info.summary,
        inverse_until=until,
    )


def _settled(
    ctx: ActionContext, info: KeyInfo, summary: str, *, until: str | None = None
) -> Outcome:
    """Nothing to send: "already" or, on a resumed re-check, the change made before the run
    stopped (the live state is what the call sent then asked for)."""
    earlier = ctx.changed_by_earlier_attempt()
    if earlier is None:
        return _already(info, summary, until=until)
    return Outcome(
        outputs={"key_id": info.key_id, "state": info.state, "deletion_date": info.deletion_date},
        summary=f"{info.key_id}: {earlier.get('state')} -> {info.state}",
        before=earlier,
        after=info.summary,
        inverse_until=until,
    )


def _changed(ctx: ActionContext, info: KeyInfo, extra: dict[str, Any] | None = None) -> Outcome:
    after = describe(ctx, info.arn)  # the ARN: the key's own Region, not the run's
    return Outcome(
        outputs={
            "key_id": after.key_id,
            "state": after.state,
            "deletion_date": after.deletion_date,
            **(extra or {}),
        },
        summary=f"{info.key_id}: {info.state} -> {after.state}",
        before=info.summary,
        after=after.summary,
    )


def _tags(ctx: ActionContext, info: KeyInfo) -> dict[str, str]:
    return {
        t["TagKey"]: t["TagValue"]
        for t in list_all(ctx, "ListResourceTags", "Tags", info.key_id, region=info.region)
    }
