"""Key rotation: enable automatic rotation with a period, rotate the key material on demand.

Both refuse keys that cannot rotate (asymmetric, HMAC, imported or external material) and
multi-Region replicas (they rotate with their primary).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pydantic import Field

from kmsir.actions.base import IRREVERSIBLE, Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kms_lifecycle import undo_key
from kmsir.actions.kmskeys import KeyInfo, KeyParams, list_all, target
from kmsir.aws import RESPONSE_LOST, aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call


class RotationParams(KeyParams):
    """The key and its rotation period (AWS allows 90-2560 days; AWS's default is 365)."""

    period_days: int = Field(default=365, ge=90, le=2560)


class EnableRotation(Action[RotationParams]):
    """Turn on automatic rotation with a period (90 days is the shortest AWS allows).

    ```yaml
    - id: rotation
      action: kms.enable-rotation
      with: {key: "{{ steps.snapshot.key_id }}", period_days: 90}
    ```
    """

    name = "kms.enable-rotation"
    params = RotationParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "enabled": "bool",
            "period_days": "int|null",
            "next_rotation_date": "str|null",
        }
    )
    permissions = ("kms:DescribeKey", "kms:GetKeyRotationStatus", "kms:EnableKeyRotation")
    mutating = True

    def api_calls(self, params: RotationParams) -> list[Call]:
        return [self._call(params.key, params)]

    @staticmethod
    def _call(key: str, params: RotationParams) -> Call:
        period = {"KeyId": key, "RotationPeriodInDays": params.period_days}
        return Call(service="kms", operation="EnableKeyRotation", params=period)

    def preview(self, ctx: ActionContext, params: RotationParams) -> Preview:
        info = _rotatable(ctx, params.key, self.name)
        status = _rotation(ctx, info)
        same = status["enabled"] and status["period_days"] == params.period_days
        calls = () if same else (self._call(info.key_id, params),)
        return Preview(
            calls=calls, target=f"{info.key_id} ({info.arn})", state=f"rotation {status}"
        )

    def run(self, ctx: ActionContext, params: RotationParams) -> Outcome:
        info = _rotatable(ctx, params.key, self.name)
        before = _rotation(ctx, info)
        if before["enabled"] and before["period_days"] == params.period_days:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is not None:  # the EnableKeyRotation sent before the interruption
                return self._enabled(info, earlier, before)
            return Outcome(
                outputs={"key_id": info.key_id, **before},
                summary=f"{info.key_id}: rotation already every "
                f"{params.period_days} days: nothing sent",
                status="already",
                before=before,
                after=before,
            )
        ctx.changing(before)
        with aws_errors(f"EnableKeyRotation on {info.key_id}"):
            ctx.clients.client("kms", info.region).enable_key_rotation(
                KeyId=info.key_id, RotationPeriodInDays=params.period_days
            )
        return self._enabled(info, before, _rotation(ctx, info))

    def undo(self, done: Done) -> Undo | None:
        """Put the earlier period back; rotation that was off kmsir cannot turn off again."""
        before, key = done.before or {}, undo_key(done)
        if key is None or "enabled" not in before:
            return None
        if before["enabled"] and before.get("period_days"):
            return Undo(
                "kms.enable-rotation",
                {"key": key, "period_days": before["period_days"]},
                f"rotate key {key} every {before['period_days']} days again, as before step "
                f"{done.step_id}",
            )
        return Undo(
            IRREVERSIBLE,
            {"key": key},
            f"automatic rotation of key {key} was off before step {done.step_id}; kmsir has no "
            f"action that turns it off: aws kms disable-key-rotation --key-id {key}",
        )

    @staticmethod
    def _enabled(info: KeyInfo, before: dict[str, Any], after: dict[str, Any]) -> Outcome:
        return Outcome(
            outputs={"key_id": info.key_id, **after},
            summary=f"{info.key_id}: rotation every {after['period_days']} days, "
            f"next on {after['next_rotation_date']}",
            before=before,
            after=after,
        )


class RotateNow(Action[KeyParams]):
    """Rotate the key material now (on demand); old material still decrypts old data.

    ```yaml
    - id: rotate
      action: kms.rotate-now
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.rotate-now"
    params = KeyParams
    outputs = MappingProxyType({"key_id": "str", "rotations": "int"})
    permissions = (
        "kms:DescribeKey",
        "kms:ListKeyRotations",
        "kms:GetKeyRotationStatus",
        "kms:RotateKeyOnDemand",
    )
    mutating = True

    def api_calls(self, params: KeyParams) -> list[Call]:
        return [_rotate(params.key)]

    def preview(self, ctx: ActionContext, params: KeyParams) -> Preview:
        info = _rotatable(ctx, params.key, self.name)
        count = len(list_all(ctx, "ListKeyRotations", "Rotations", info.key_id, region=info.region))
        return Preview(
            calls=(_rotate(info.key_id),),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, {count} rotation(s) so far",
            notes=("AWS allows at most 25 on-demand rotations per key",),
        )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        info = _rotatable(ctx, params.key, self.name)
        before = len(
            list_all(ctx, "ListKeyRotations", "Rotations", info.key_id, region=info.region)
        )
        earlier = ctx.changed_by_earlier_attempt()
        counted = int(earlier.get("rotations") or 0) if earlier is not None else None
        if counted is not None and (before > counted or _rotating(ctx, info)):
            # the rotation an earlier attempt sent happened, or is under way (ListKeyRotations
            # lists completed ones only): never rotate twice
            before = counted
        else:
            ctx.changing({"key_id": info.key_id, "rotations": before})
            try:
                with aws_errors(f"RotateKeyOnDemand on {info.key_id}"):
                    ctx.clients.client("kms", info.region).rotate_key_on_demand(KeyId=info.key_id)
            except AwsError as exc:
                # botocore does not re-send it after a lost response (a second one would
                # rotate again): AWS's state tells whether this one was carried out
                if exc.code not in RESPONSE_LOST or not _rotated_since(ctx, info, before):
                    raise
        rotations = list_all(ctx, "ListKeyRotations", "Rotations", info.key_id, region=info.region)
        ctx.write_json("rotations-after.json", {"Rotations": rotations})
        return Outcome(
            outputs={"key_id": info.key_id, "rotations": len(rotations)},
            summary=f"{info.key_id}: rotated on demand ({before} -> {len(rotations)} rotations)",
            before={"key_id": info.key_id, "rotations": before},
            after={"key_id": info.key_id, "rotations": len(rotations)},
        )

    def undo(self, done: Done) -> Undo | None:
        """A rotation cannot be undone: the new key material stays current."""
        key = undo_key(done)
        counts = f" ({(done.before or {}).get('rotations')} -> {done.outputs.get('rotations')})"
        return Undo(
            IRREVERSIBLE,
            {"key": key},
            f"key {key}'s material was rotated on demand{counts if done.outputs else ''}; a "
            "rotation cannot be undone: the new material stays current (the old one still "
            "decrypts what it encrypted)",
        )


# -- helpers -------------------------------------------------------------------------------


def _rotatable(ctx: ActionContext, key: str, action: str) -> KeyInfo:
    info = target(ctx, key, action)
    if info.multi_region_role == "REPLICA":
        raise ActionError(
            f"{action} refused on {info.key_id}: a multi-Region replica rotates with its "
            f"primary ({info.primary_arn}); act on the primary"
        )
    if not info.rotatable:
        raise ActionError(
            f"{action} refused on {info.key_id}: only symmetric keys with AWS_KMS key material "
            f"rotate in AWS KMS (this one is {info.key_spec}, origin {info.origin})"
        )
    return info


def _rotated_since(ctx: ActionContext, info: KeyInfo, count: int) -> bool:
    """True when the key rotated on demand since it had ``count`` rotations, or is rotating."""
    rotations = list_all(ctx, "ListKeyRotations", "Rotations", info.key_id, region=info.region)
    return len(rotations) > count or _rotating(ctx, info)


def _rotating(ctx: ActionContext, info: KeyInfo) -> bool:
    """True while an on-demand rotation of the key is in progress."""
    with aws_errors(f"GetKeyRotationStatus on {info.key_id}"):
        status = ctx.clients.client("kms", info.region).get_key_rotation_status(KeyId=info.key_id)
    return bool(status.get("OnDemandRotationStartDate"))


def _rotation(ctx: ActionContext, info: KeyInfo) -> dict[str, Any]:
    with aws_errors(f"GetKeyRotationStatus on {info.key_id}"):
        status = ctx.clients.client("kms", info.region).get_key_rotation_status(KeyId=info.key_id)
    next_date = status.get("NextRotationDate")
    return {
        "enabled": bool(status.get("KeyRotationEnabled")),
        "period_days": status.get("RotationPeriodInDays"),
        "next_rotation_date": next_date.isoformat() if hasattr(next_date, "isoformat") else None,
    }


def _rotate(key: str) -> Call:
    """The ``RotateKeyOnDemand`` call for ``key``."""
    return Call(service="kms", operation="RotateKeyOnDemand", params={"KeyId": key})
