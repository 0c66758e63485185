"""``kms.revoke-grants``: revoke grants by id or by a filter; the prompt lists exactly which."""

from __future__ import annotations

import fnmatch
from datetime import datetime
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import (
    IRREVERSIBLE,
    Action,
    ActionContext,
    Done,
    Outcome,
    Params,
    Preview,
    Undo,
)
from kmsir.actions.kms_lifecycle import undo_key
from kmsir.actions.kmskeys import (
    KeyInfo,
    KeyParams,
    grantee_account,
    list_all_grants,
    target,
    typed_confirmation,
)
from kmsir.aws import aws_errors
from kmsir.errors import AwsError
from kmsir.evidence.calls import Call
from kmsir.playbook.values import parse_time, time_parameter


class GrantFilter(Params):
    """Which grants to revoke; every criterion given must hold (AND).

    ``allowed_accounts``: the grantee's account is not one of these (the key's own account is
    always allowed); ``grantee_principal``: the grantee ARN, ``*`` wildcards allowed;
    ``operations``: the grant allows any of these; ``created_after``: an ISO time or a
    duration ago (``3d``); grants whose creation date AWS does not give never match it.
    """

    allowed_accounts: list[str] | None = None
    grantee_principal: str | None = Field(default=None, min_length=1, max_length=2048)
    operations: list[str] | None = Field(default=None, min_length=1)
    created_after: str | None = None

    @field_validator("allowed_accounts")
    @classmethod
    def _accounts(cls, value: list[str] | None) -> list[str] | None:
        for account in value or []:
            if not (len(account) == 12 and account.isdigit()):
                raise ValueError(f"{account[:40]!r} is not a 12-digit account id")
        return value

    _time = field_validator("created_after", mode="before")(time_parameter)

    @model_validator(mode="after")
    def _something(self) -> GrantFilter:
        if all(
            v is None
            for v in (
                self.allowed_accounts,
                self.grantee_principal,
                self.operations,
                self.created_after,
            )
        ):
            raise ValueError("a filter needs at least one criterion")
        return self

    def matches(self, grant: dict[str, Any], key_account: str, now: datetime) -> bool:
        """Whether ``grant`` (a ListGrants entry) is one to revoke."""
        principal = str(grant.get("GranteePrincipal", ""))
        if self.allowed_accounts is not None:
            account = grantee_account(principal)
            if account is None or account in {key_account, *self.allowed_accounts}:
                return False
        if self.grantee_principal is not None and not fnmatch.fnmatchcase(
            principal, self.grantee_principal
        ):
            return False
        if self.operations is not None and not set(self.operations) & set(
            grant.get("Operations", [])
        ):
            return False
        if self.created_after is not None:
            created = grant.get("CreationDate")
            if not isinstance(created, datetime):
                return False
            if created <= parse_time(self.created_after, now):
                return False
        return True


class RevokeGrantsParams(KeyParams):
    """The key, and either the grant ids or a filter."""

    grant_ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: GrantFilter | None = None

    @field_validator("grant_ids")
    @classmethod
    def _grant_ids(cls, value: list[str] | None) -> list[str] | None:
        for grant_id in value or []:
            if not grant_id or len(grant_id) > 128 or not grant_id.isalnum():
                raise ValueError(f"{grant_id[:80]!r} is not a grant id")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> RevokeGrantsParams:
        if (self.grant_ids is None) == (self.filter is None):
            raise ValueError("give exactly one of grant_ids or filter")
        return self


class RevokeGrants(Action[RevokeGrantsParams]):
    """Revoke grants on a key, by id or by filter. Irreversible: a grant cannot be restored.

    ```yaml
    - id: revoke
      action: kms.revoke-grants
      with:
        key: "{{ steps.snapshot.key_id }}"
        filter: {allowed_accounts: ["111122223333"]}   # or grant_ids: [...]
    ```
    A grant that is already gone is recorded as such, not as an error.
    Outputs: ``revoked``, ``already_gone``, ``remaining_grant_ids``.
    """

    name = "kms.revoke-grants"
    params = RevokeGrantsParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "revoked": "list[str]",
            "already_gone": "list[str]",
            "not_approved": "list[str]",
            "still_listed": "list[str]",
            "remaining_grant_ids": "list[str]",
        }
    )
    permissions = ("kms:DescribeKey", "kms:ListGrants", "kms:ListAliases", "kms:RevokeGrant")
    mutating = True
    inverse = IRREVERSIBLE

    def api_calls(self, params: RevokeGrantsParams) -> list[Call]:
        if params.grant_ids is not None:
            return [_revoke(params.key, g) for g in params.grant_ids]
        return [_revoke(params.key, "<each grant matching the filter>")]

    def _selection(
        self, ctx: ActionContext, params: RevokeGrantsParams, info: KeyInfo
    ) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
        """(grants to revoke, requested ids already gone, all current grants)."""
        current = list_all_grants(ctx, info.key_id, region=info.region)
        if params.filter is not None:
            now = ctx.now()
            chosen = [g for g in current if params.filter.matches(g, info.account, now)]
            return chosen, [], current
        by_id = {g["GrantId"]: g for g in current}
        ids = params.grant_ids or []
        return [by_id[g] for g in ids if g in by_id], [g for g in ids if g not in by_id], current

    def preview(self, ctx: ActionContext, params: RevokeGrantsParams) -> Preview:
        info = target(ctx, params.key, self.name)
        chosen, gone, current = self._selection(ctx, params, info)
        notes = [
            f"grant {g['GrantId']} ({g.get('Name') or 'unnamed'}): {g.get('GranteePrincipal')} "
            f"may {','.join(g.get('Operations', []))}"
            for g in chosen
        ]
        notes += [f"grant {g}: already gone" for g in gone]
        if not chosen:
            notes.append("no grant matches: nothing will be revoked")
        return Preview(
            calls=tuple(_revoke(info.key_id, str(g["GrantId"])) for g in chosen),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, {len(current)} grant(s)",
            typed=typed_confirmation(ctx, info),
            notes=tuple(notes),
            items=tuple(str(g["GrantId"]) for g in chosen),
        )

    def run(self, ctx: ActionContext, params: RevokeGrantsParams) -> Outcome:
        info = target(ctx, params.key, self.name)
        chosen, gone, before = self._selection(ctx, params, info)
        unapproved: list[str] = []
        if ctx.approved is not None:  # revoke no grant the responder was not shown
            shown = set(ctx.approved.items)
            unapproved = [g["GrantId"] for g in chosen if g["GrantId"] not in shown]
            chosen = [g for g in chosen if g["GrantId"] in shown]
        revoked: list[str] = []
        earlier = ctx.changed_by_earlier_attempt()
        if earlier is not None:
            # a resumed re-check: grants whose RevokeGrant was sent before the run stopped
            # and that are gone now were revoked by this step; the rest are revoked below
            present = {g["GrantId"] for g in before}
            sent = [c.get("GrantId") for c in ctx.sent_by_earlier_attempt("RevokeGrant")]
            revoked = [str(g) for g in dict.fromkeys(sent) if g and g not in present]
            gone = [g for g in gone if g not in revoked]
        if ctx.artifacts.earlier(ctx.step_id, "grants-before.json") is None:
            ctx.write_json("grants-before.json", {"Grants": before})
        if chosen:
            ctx.changing({"key_id": info.key_id, "grants": sorted(g["GrantId"] for g in before)})
        kms = ctx.clients.client("kms", info.region)
        for grant in chosen:
            grant_id = grant["GrantId"]
            try:
                with aws_errors(f"RevokeGrant {grant_id} on {info.key_id}") as call:
                    kms.revoke_grant(KeyId=info.key_id, GrantId=grant_id)
            except AwsError as exc:
                if exc.code != "NotFoundException":
                    raise
                if not call.retried:
                    gone.append(grant_id)  # revoked by someone else in the meantime
                    continue
                # the answer to botocore's retry: the first attempt revoked the grant and
                # only its response was lost
            revoked.append(grant_id)
        remaining = [g["GrantId"] for g in list_all_grants(ctx, info.key_id, region=info.region)]
        # Grant changes are eventually consistent: one still listed is reported, not an error.
        listed = sorted(set(revoked) & set(remaining))
        parts = [
            f"revoked {len(revoked)} grant(s)" + (f": {', '.join(revoked)}" if revoked else "")
        ]
        if gone:
            parts.append(f"already gone: {', '.join(gone)}")
        if unapproved:
            parts.append(f"left alone, matched only after approval: {', '.join(unapproved)}")
        if listed:
            parts.append(
                f"still listed right after revoking (eventual consistency): {', '.join(listed)}"
            )
        return Outcome(
            outputs={
                "key_id": info.key_id,
                "revoked": revoked,
                "already_gone": gone,
                "not_approved": unapproved,
                "still_listed": listed,
                "remaining_grant_ids": remaining,
            },
            summary="; ".join(parts),
            status="succeeded" if revoked else "already",
            before=earlier
            or {"key_id": info.key_id, "grants": sorted(g["GrantId"] for g in before)},
            after={"key_id": info.key_id, "grants": sorted(remaining)},
        )

    def undo(self, done: Done) -> Undo | None:
        """Nothing can bring a revoked grant back: say so for each grant, and where its
        grantee and operations are kept to create a new one if it was legitimate."""
        ids = done.outputs.get("revoked") or done.params.get("grant_ids") or []
        revoked = [str(g) for g in ids]
        if not revoked:
            return None
        key = undo_key(done)
        kept = next((a for a in done.artifacts if a.endswith("/grants-before.json")), None)
        where = f" (grantee and operations kept in {kept})" if kept else ""
        return Undo(
            IRREVERSIBLE,
            {"key": key, "grant_ids": revoked},
            "; ".join(
                f"grant {g} on key {key} could not be restored: a revoked grant cannot be "
                "restored; create a new grant (aws kms create-grant) for the same grantee and "
                f"operations if it was legitimate{where}"
                for g in revoked
            ),
        )


def _revoke(key: str, grant_id: str) -> Call:
    """The ``RevokeGrant`` call for one grant of ``key``."""
    return Call(service="kms", operation="RevokeGrant", params={"KeyId": key, "GrantId": grant_id})
