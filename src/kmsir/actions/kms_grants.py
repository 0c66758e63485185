"""``kms.revoke-grants`` and ``kms.retire-grants``: remove grants by id or by a filter; the
prompt lists exactly which, and the step re-lists until each removed grant is gone.

Both delete a grant; they differ in who may call them. RevokeGrant is allowed by key and IAM
policies (``kms:RevokeGrant``, a key administrator's permission); RetireGrant is allowed by the
grant itself: to its retiring principal, to its grantee when the grant allows RetireGrant, and
to the account that created it. A responder without ``kms:RevokeGrant`` who acts as a grant's
retiring principal can still remove it by retiring it. Grant changes are eventually
consistent (usually less than five minutes), so a removed grant may stay listed for a while:
the step lists again, waiting a little longer each time, until it is gone or
``settle_seconds`` pass, and reports what is "still listed" instead of failing. Which grants
(``GrantFilter``) and the parameters are in ``kms_grant_params``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from kmsir.actions.base import (
    IRREVERSIBLE,
    Action,
    ActionContext,
    Done,
    Outcome,
    Preview,
    Undo,
)
from kmsir.actions.kms_grant_params import GrantFilter, RetireGrantsParams, RevokeGrantsParams
from kmsir.actions.kms_lifecycle import undo_key
from kmsir.actions.kmskeys import KeyInfo, list_all_grants, target, typed_confirmation
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call

__all__ = [
    "GrantFilter",
    "RetireGrants",
    "RetireGrantsParams",
    "RevokeGrants",
    "RevokeGrantsParams",
    "settle",
]

#: The longest single wait between two listings while a removed grant is still listed.
MAX_PAUSE = 8.0


class _GrantRemoval(Action[RevokeGrantsParams]):
    """What revoking and retiring share: the selection, the preview, the calls one by one,
    the listing until the removed grants are gone, the irreversible undo."""

    #: The API operation (``RevokeGrant``/``RetireGrant``) and its past tense for outputs.
    operation: str
    past: str
    mutating = True
    inverse = IRREVERSIBLE

    def _call(self, info_or_key: KeyInfo | str, grant_id: str) -> Call:
        """The call removing one grant of the key (by key id; RetireGrant by key ARN)."""
        key = info_or_key if isinstance(info_or_key, str) else self._key_param(info_or_key)
        return Call(
            service="kms", operation=self.operation, params={"KeyId": key, "GrantId": grant_id}
        )

    def _key_param(self, info: KeyInfo) -> str:
        return info.key_id

    def api_calls(self, params: RevokeGrantsParams) -> list[Call]:
        if params.grant_ids is not None:
            return [self._call(params.key, g) for g in params.grant_ids]
        return [self._call(params.key, "<each grant matching the filter>")]

    @staticmethod
    def _selection(
        ctx: ActionContext, params: RevokeGrantsParams, info: KeyInfo
    ) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
        """(grants to remove, requested ids already gone, all current grants)."""
        current = list_all_grants(ctx, info.key_id, region=info.region)
        if params.filter is not None:
            now = ctx.now()
            chosen = [g for g in current if params.filter.matches(g, info.account, now)]
            return chosen, [], current
        by_id = {g["GrantId"]: g for g in current}
        ids = params.grant_ids or []
        return [by_id[g] for g in ids if g in by_id], [g for g in ids if g not in by_id], current

    def _grant_note(self, grant: dict[str, Any]) -> str:
        return (
            f"grant {grant['GrantId']} ({grant.get('Name') or 'unnamed'}): "
            f"{grant.get('GranteePrincipal')} may {','.join(grant.get('Operations', []))}"
        )

    def preview(self, ctx: ActionContext, params: RevokeGrantsParams) -> Preview:
        info = target(ctx, params.key, self.name)
        chosen, gone, current = self._selection(ctx, params, info)
        notes = [self._grant_note(g) for g in chosen]
        notes += [f"grant {g}: already gone" for g in gone]
        if not chosen:
            notes.append(f"no grant matches: nothing will be {self.past}")
        elif params.settle_seconds:
            notes.append(
                f"then lists the grants again until each {self.past} one is gone, for at most "
                f"{params.settle_seconds} s (grant changes are eventually consistent)"
            )
        return Preview(
            calls=tuple(self._call(info, str(g["GrantId"])) for g in chosen),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, {len(current)} grant(s)",
            typed=typed_confirmation(ctx, info),
            notes=tuple(notes),
            items=tuple(str(g["GrantId"]) for g in chosen),
        )

    def _send(self, ctx: ActionContext, info: KeyInfo, grant_id: str) -> bool:
        """Remove one grant; ``False`` when it was already gone (someone else removed it)."""
        from botocore import xform_name  # botocore is imported when a call is made

        kms = ctx.clients.client("kms", info.region)
        try:
            with aws_errors(f"{self.operation} {grant_id} on {info.key_id}") as call:
                getattr(kms, xform_name(self.operation))(
                    KeyId=self._key_param(info), GrantId=grant_id
                )
        except AwsError as exc:
            if exc.code != "NotFoundException":
                refused = self._refused(exc, info, grant_id)
                if refused is exc:
                    raise
                raise refused from exc
            # a retry's NotFound: the first attempt removed the grant, its response was lost
            return bool(call.retried)
        return True

    def _refused(self, exc: AwsError, info: KeyInfo, grant_id: str) -> Exception:
        """The error to raise when AWS refuses the call (the reason, as AWS gave it)."""
        return exc

    def run(self, ctx: ActionContext, params: RevokeGrantsParams) -> Outcome:
        info = target(ctx, params.key, self.name)
        chosen, gone, before = self._selection(ctx, params, info)
        unapproved: list[str] = []
        if ctx.approved is not None:  # remove no grant the responder was not shown
            shown = set(ctx.approved.items)
            unapproved = [g["GrantId"] for g in chosen if g["GrantId"] not in shown]
            chosen = [g for g in chosen if g["GrantId"] in shown]
        removed: list[str] = []
        earlier = ctx.changed_by_earlier_attempt()
        if earlier is not None:
            # a resumed re-check: grants whose removal was sent before the run stopped and
            # that are gone now were removed by this step; the rest are removed below
            present = {g["GrantId"] for g in before}
            sent = [c.get("GrantId") for c in ctx.sent_by_earlier_attempt(self.operation)]
            removed = [str(g) for g in dict.fromkeys(sent) if g and g not in present]
            gone = [g for g in gone if g not in removed]
        if ctx.artifacts.earlier(ctx.step_id, "grants-before.json") is None:
            ctx.write_json("grants-before.json", {"Grants": before})
        if chosen:
            ctx.changing({"key_id": info.key_id, "grants": sorted(g["GrantId"] for g in before)})
        for grant in chosen:
            grant_id = grant["GrantId"]
            (removed if self._send(ctx, info, grant_id) else gone).append(grant_id)
        remaining, listed, waited = settle(ctx, info, removed, params.settle_seconds)
        parts = [
            f"{self.past} {len(removed)} grant(s)" + (f": {', '.join(removed)}" if removed else "")
        ]
        if gone:
            parts.append(f"already gone: {', '.join(gone)}")
        if unapproved:
            parts.append(f"left alone, matched only after approval: {', '.join(unapproved)}")
        if listed:
            parts.append(
                f"still listed after {waited:g} s (eventual consistency): {', '.join(listed)}"
            )
        return Outcome(
            outputs={
                "key_id": info.key_id,
                self.past: removed,
                "already_gone": gone,
                "not_approved": unapproved,
                "still_listed": listed,
                "remaining_grant_ids": remaining,
            },
            summary="; ".join(parts),
            status="succeeded" if removed else "already",
            before=earlier
            or {"key_id": info.key_id, "grants": sorted(g["GrantId"] for g in before)},
            after={"key_id": info.key_id, "grants": sorted(remaining)},
        )

    def undo(self, done: Done) -> Undo | None:
        """Nothing can bring a removed grant back: say so for each grant, and where its
        grantee and operations are kept to create a new one if it was legitimate."""
        ids = done.outputs.get(self.past) or done.params.get("grant_ids") or []
        removed = [str(g) for g in ids]
        if not removed:
            return None
        key = undo_key(done)
        kept = next((a for a in done.artifacts if a.endswith("/grants-before.json")), None)
        where = f" (grantee and operations kept in {kept})" if kept else ""
        return Undo(
            IRREVERSIBLE,
            {"key": key, "grant_ids": removed},
            "; ".join(
                f"grant {g} on key {key} could not be restored: a {self.past} grant cannot be "
                "restored; create a new grant (aws kms create-grant) for the same grantee and "
                f"operations if it was legitimate{where}"
                for g in removed
            ),
        )


def _outputs(past: str) -> MappingProxyType[str, str]:
    return MappingProxyType(
        {
            "key_id": "str",
            past: "list[str]",
            "already_gone": "list[str]",
            "not_approved": "list[str]",
            "still_listed": "list[str]",
            "remaining_grant_ids": "list[str]",
        }
    )


class RevokeGrants(_GrantRemoval):
    """Revoke grants on a key, by id or by filter. Irreversible: a grant cannot be restored.

    ```yaml
    - id: revoke
      action: kms.revoke-grants
      with:
        key: "{{ steps.snapshot.key_id }}"
        filter: {allowed_accounts: ["111122223333"]}   # or grant_ids: [...]
        settle_seconds: 30                              # default
    ```
    A grant that is already gone is recorded as such, not as an error; one still listed
    ``settle_seconds`` after its revocation is reported (eventual consistency), not failed.
    Outputs: ``revoked``, ``already_gone``, ``not_approved``, ``still_listed``,
    ``remaining_grant_ids``.
    """

    name = "kms.revoke-grants"
    high_impact = True  # each grantee loses access (irreversible too)
    params = RevokeGrantsParams
    outputs = _outputs("revoked")
    permissions = ("kms:DescribeKey", "kms:ListGrants", "kms:ListAliases", "kms:RevokeGrant")
    operation = "RevokeGrant"
    past = "revoked"


class RetireGrants(_GrantRemoval):
    """Retire grants on a key, by id or by filter: allowed to a grant's retiring principal
    where the responder lacks ``kms:RevokeGrant``. Irreversible, like revoking.

    ```yaml
    - id: retire
      action: kms.retire-grants
      with:
        key: "{{ steps.snapshot.key_id }}"
        grant_ids: ["{{ steps.snapshot.external_grant_ids[0] }}"]   # or filter: {...}
    ```
    AWS lets a grant's retiring principal, its grantee when the grant allows RetireGrant, and
    the account that created it retire it (the grant decides, not the key policy). The preview
    names each grant's retiring principal. Parameters and outcome as for
    ``kms.revoke-grants``; outputs ``retired`` instead of ``revoked``.
    """

    name = "kms.retire-grants"
    params = RetireGrantsParams
    outputs = _outputs("retired")
    permissions = ("kms:DescribeKey", "kms:ListGrants", "kms:ListAliases", "kms:RetireGrant")
    operation = "RetireGrant"
    past = "retired"

    def _key_param(self, info: KeyInfo) -> str:
        # AWS documents RetireGrant's KeyId as the key ARN (the retiring principal may be in
        # another account)
        return info.arn

    def _grant_note(self, grant: dict[str, Any]) -> str:
        retiring = grant.get("RetiringPrincipal")
        may = "RetireGrant" in grant.get("Operations", [])
        who = f"retiring principal {retiring}" if retiring else "no retiring principal"
        if may:
            who += "; its grantee may retire it too"
        return f"{super()._grant_note(grant)} ({who})"

    def _refused(self, exc: AwsError, info: KeyInfo, grant_id: str) -> Exception:
        if "AccessDenied" not in exc.code:
            return exc
        return ActionError(
            f"{exc}; only the grant's retiring principal, its grantee (when the grant allows "
            "RetireGrant) or the account that created it may retire it: run as one of them, or "
            "revoke it with kms.revoke-grants (kms:RevokeGrant)"
        )


def settle(
    ctx: ActionContext, info: KeyInfo, removed: list[str], bound: float
) -> tuple[list[str], list[str], float]:
    """List the key's grants until none of ``removed`` is listed, or until ``bound`` seconds
    of waiting between listings have passed (the waits go through ``ctx.sleep``, doubling
    from one second). Returns (the grant ids listed last, those of ``removed`` among them,
    the seconds waited)."""
    waited, pause = 0.0, 1.0
    while True:
        remaining = [g["GrantId"] for g in list_all_grants(ctx, info.key_id, region=info.region)]
        listed = sorted(set(removed) & set(remaining))
        if not listed or waited >= bound:
            return remaining, listed, waited
        step = min(pause, bound - waited)
        ctx.reporter.progress("waiting for removed grants to go (s)", int(waited), int(bound))
        ctx.sleep(step)
        waited += step
        pause = min(pause * 2, MAX_PAUSE)
