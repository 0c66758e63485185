"""Key state changes: disable/enable, tag; and the outcome helpers the key actions share.

Deletion (schedule, cancel) is in ``kms_deletion``, rotation in ``kms_rotation``. Each action
resolves the key, refuses AWS-managed keys, records "already in desired state" without sending
anything (``settled``), and reads the key again after changing it (``changed``) so the journal
holds the state AWS reports, not the one we hoped for.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kmskeys import KeyInfo, KeyParams, describe, list_all, target
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call

#: Key states of a scheduled deletion (a multi-Region primary with replicas waits in the second).
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
            return settled(ctx, info, f"{info.key_id} was already {self.desired}: nothing sent")
        ctx.changing(info.summary)
        from botocore import xform_name  # botocore is imported when a call is made

        kms = ctx.clients.client("kms", info.region)
        with aws_errors(f"{self.operation} on {info.key_id}"):
            getattr(kms, xform_name(self.operation))(KeyId=info.key_id)
        return changed(ctx, info)

    def undo(self, done: Done) -> Undo | None:
        """Make the key what it was before the step: enable what it disabled, and back."""
        key = undo_key(done)
        if key is None or self.inverse is None:
            return None
        verb = self.inverse.removeprefix("kms.").removesuffix("-key")
        was = (done.before or {}).get("state")
        return Undo(
            self.inverse,
            {"key": key},
            f"{verb} key {key} again (step {done.step_id} made it {self.desired}"
            + (f"; it was {was})" if was else ")"),
        )


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
    outputs = MappingProxyType({"key_id": "str", "state": "str", "deletion_date": "str|null"})
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
    outputs = MappingProxyType({"key_id": "str", "state": "str", "deletion_date": "str|null"})
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
