"""Key state changes: disable/enable, tag; and the outcome helpers the key actions share.

Deletion (schedule, cancel) is in ``kms_deletion``, rotation in ``kms_rotation``. Each action
resolves the key, refuses AWS-managed keys, records "already in desired state" without sending
anything (``settled``), and reads the key again after changing it (``changed``) so the journal
holds the state AWS reports, not the one we hoped for.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kmskeys import (
    KeyInfo,
    KeyParams,
    ReplicasParams,
    call_key,
    describe,
    list_all,
    members,
    regions_note,
    target,
)
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call

#: Key states of a scheduled deletion (a multi-Region primary with replicas waits in the second).
PENDING = ("PendingDeletion", "PendingReplicaDeletion")


class _StateChange(Action[ReplicasParams]):
    """One call per key, one desired end state (DisableKey, EnableKey); with ``replicas:
    true`` one call for each Region's key of a multi-Region key, under one approval."""

    operation: str
    desired: str

    def api_calls(self, params: ReplicasParams) -> list[Call]:
        calls = [self._call(params.key)]
        if params.replicas:
            calls.append(self._call("<each replica's key ARN>"))
        return calls

    def _call(self, key: str) -> Call:
        return Call(service="kms", operation=self.operation, params={"KeyId": key})

    def _target(self, ctx: ActionContext, params: ReplicasParams) -> list[KeyInfo]:
        """The key (refused while its deletion is pending), then with ``replicas`` the other
        Regions' keys of the same multi-Region key."""
        info = target(ctx, params.key, self.name)
        if info.state in PENDING:
            raise ActionError(
                f"{self.operation} refused on {info.key_id}: the key is {info.state} "
                f"(deletion on {info.deletion_date or 'hold for its replicas'}); cancel the "
                "deletion first"
            )
        return members(ctx, info, params.replicas)

    def _todo(self, keys: list[KeyInfo]) -> list[KeyInfo]:
        """The keys not yet in the desired state; a replica pending deletion cannot change
        (and is unusable already): left alone, the preview says so."""
        return [k for k in keys if k.state != self.desired and k.state not in PENDING]

    def preview(self, ctx: ActionContext, params: ReplicasParams) -> Preview:
        keys = self._target(ctx, params)
        info = keys[0]
        calls = tuple(self._call(call_key(k, info)) for k in self._todo(keys))
        notes = []
        if params.replicas:
            notes.append(regions_note(keys))
            notes += [
                f"{k.arn} is {k.state}: left alone (deletion on {k.deletion_date or 'hold'})"
                for k in keys[1:]
                if k.state in PENDING
            ]
        return Preview(
            calls=calls,
            target="; ".join(f"{k.key_id} ({k.arn})" for k in keys),
            state="; ".join(f"{k.region}: key state {k.state}" for k in keys)
            if len(keys) > 1
            else f"key state {info.state}",
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: ReplicasParams) -> Outcome:
        keys = self._target(ctx, params)
        info, others = keys[0], keys[1:]
        todo = self._todo(keys)
        earlier = ctx.changed_by_earlier_attempt()
        if not todo and earlier is not None and others:
            # every call went out before the run stopped: the replicas they changed are the
            # step's too, or a rollback would leave them as the step made them
            return _changed_all(ctx, keys, self._sent_to(ctx, others), earlier)
        if not todo:
            outcome = settled(ctx, info, f"{info.key_id} was already {self.desired}: nothing sent")
            summary = outcome.summary
            if others:
                summary = summary.replace(" was already", " and its replicas were already", 1)
            return dataclasses.replace(
                outcome, outputs={**outcome.outputs, "replicas_changed": []}, summary=summary
            )
        # a resumed attempt: the state before the first attempt's calls, and the replicas
        # it changed then, are the step's too
        before = earlier or {**info.summary, **_replica_states(others)}
        ctx.changing(before)
        from botocore import xform_name  # botocore is imported when a call is made

        for key in todo:
            kms = ctx.clients.client("kms", key.region)
            with aws_errors(f"{self.operation} on {call_key(key, info)}"):
                getattr(kms, xform_name(self.operation))(KeyId=call_key(key, info))
        if not others:
            return changed(ctx, info, extra={"replicas_changed": []})
        sent = self._sent_to(ctx, others)
        replicas = [k.arn for k in others if k in todo or k.arn in sent]
        return _changed_all(ctx, keys, replicas, before)

    def _sent_to(self, ctx: ActionContext, others: list[KeyInfo]) -> list[str]:
        """The other Regions' keys an earlier, unfinished attempt sent the call to (a call
        names them by ARN, see ``call_key``)."""
        sent = {str(c.get("KeyId")) for c in ctx.sent_by_earlier_attempt(self.operation)}
        return [k.arn for k in others if k.arn in sent]

    def undo(self, done: Done) -> Undo | None:
        """Make the key what it was before the step: enable what it disabled, and back; with
        replicas, each Region's key the step changed (all of them at once when it changed
        every one, else the others are named to undo by hand)."""
        key = undo_key(done)
        if key is None or self.inverse is None:
            return None
        verb = self.inverse.removeprefix("kms.").removesuffix("-key")
        was = (done.before or {}).get("state")
        summary = f"{verb} key {key} again (step {done.step_id} made it {self.desired}" + (
            f"; it was {was})" if was else ")"
        )
        params: dict[str, Any] = {"key": key}
        replicas = [str(a) for a in done.outputs.get("replicas_changed") or []]
        if not replicas:
            return Undo(self.inverse, params, summary)
        every = set(replicas) == set((done.before or {}).get("replicas") or {})
        if was == self.desired:  # only replicas changed: undo them, not the key
            params, summary = {"key": replicas[0]}, f"{verb} replica {replicas[0]} again"
            replicas = replicas[1:]
        elif every:
            params["replicas"] = True
            summary += f", and its replicas {', '.join(replicas)}"
            replicas = []
        if replicas:
            summary += f"; {verb} these replicas the step changed too: {', '.join(replicas)}"
        return Undo(self.inverse, params, summary)


class DisableKey(_StateChange):
    """Disable a key: every cryptographic use fails until it is enabled again.

    ```yaml
    - id: disable
      action: kms.disable-key
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.disable-key"
    high_impact = True  # every use of the key fails at once
    params = ReplicasParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "state": "str",
            "deletion_date": "str|null",
            "replicas_changed": "list[str]",
        }
    )
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
    params = ReplicasParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "state": "str",
            "deletion_date": "str|null",
            "replicas_changed": "list[str]",
        }
    )
    permissions = ("kms:DescribeKey", "kms:EnableKey")
    mutating = True
    inverse = "kms.disable-key"
    operation = "EnableKey"
    desired = "Enabled"


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
    outputs = MappingProxyType({"key_id": "str", "tags": "dict"})
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
            if earlier is None:  # the outputs every path gives: the key and its tags
                return Outcome(
                    outputs={"key_id": info.key_id, "tags": current},
                    summary=f"{info.key_id} already tagged {wanted}: nothing sent",
                    status="already",
                    before=info.summary,
                    after=info.summary,
                )
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


def undo_key(done: Done) -> str | None:
    """The key an undo acts on: the key ARN the step was given (it names the key's Region),
    else the key id the step recorded; never an alias, which may name another key by now."""
    given = str(done.params.get("key") or "")
    if given.startswith("arn:") and ":key/" in given:
        return given
    for recorded in (done.outputs, done.after or {}, done.before or {}):
        if recorded.get("key_id"):
            return str(recorded["key_id"])
    return given or None


def _already(info: KeyInfo, summary: str, *, until: str | None = None) -> Outcome:
    return Outcome(
        outputs={"key_id": info.key_id, "state": info.state, "deletion_date": info.deletion_date},
        summary=summary,
        status="already",
        before=info.summary,
        after=info.summary,
        inverse_until=until,
    )


def settled(
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


def changed(ctx: ActionContext, info: KeyInfo, extra: dict[str, Any] | None = None) -> Outcome:
    """The outcome of a change just sent: the key as AWS reports it now (``extra``: more
    outputs)."""
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


def _replica_states(others: list[KeyInfo]) -> dict[str, Any]:
    """The other Regions' keys of a ``replicas: true`` step, for its before/after record."""
    return {"replicas": {k.arn: k.state for k in others}} if others else {}


def _changed_all(
    ctx: ActionContext, keys: list[KeyInfo], replicas: list[str], before: dict[str, Any]
) -> Outcome:
    """The outcome of a ``replicas: true`` change: every Region's key as AWS reports it now,
    and as ``before`` recorded it (on a resumed attempt, before the first attempt's calls)."""
    info = keys[0]
    after = [describe(ctx, k.arn) for k in keys]
    replica_states = before.get("replicas") or {}
    was = [
        before.get("state") or info.state,
        *(replica_states.get(k.arn, k.state) for k in keys[1:]),
    ]
    return Outcome(
        outputs={
            "key_id": info.key_id,
            "state": after[0].state,
            "deletion_date": after[0].deletion_date,
            "replicas_changed": replicas,
        },
        summary="; ".join(f"{a.region}: {w} -> {a.state}" for w, a in zip(was, after, strict=True))
        + f" ({info.key_id})",
        before=before,
        after={**after[0].summary, **_replica_states(after[1:])},
    )
