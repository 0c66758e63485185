"""Detaching an SCP from accounts, OUs or the root, and deleting it once it is attached
nowhere: the inverse of ``org.attach-scp`` (``org_scp``), and its own undo the other way."""

from __future__ import annotations

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
from kmsir.actions.org_reads import (
    Organisation,
    Policy,
    management,
    organizations,
    policy,
    target_label,
    targets_of,
)
from kmsir.actions.org_scp import SID, one_or_more, valid_targets
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call

#: AWS's managed SCP attached everywhere by default: never detached by kmsir.
FULL_ACCESS_ID = "p-FullAWSAccess"
FULL_ACCESS_NAME = "FullAWSAccess"


class DetachScpParams(Params):
    """``policy``: the SCP's id or name; ``targets``: where to detach it from; ``delete``:
    delete it once it is attached nowhere."""

    policy: str = Field(min_length=1, max_length=128)
    targets: list[str] = Field(default_factory=list, max_length=100)
    delete: bool = False

    @field_validator("targets", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return one_or_more(value)

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, value: list[str]) -> list[str]:
        return valid_targets(value)

    @model_validator(mode="after")
    def _something(self) -> DetachScpParams:
        if not self.targets and not self.delete:
            raise ValueError("give targets to detach the SCP from, or delete: true")
        return self


class DetachScp(Action[DetachScpParams]):
    """Detach an SCP (the inverse of ``org.attach-scp``), and delete it if asked.

    ```yaml
    - id: unfreeze-kms-admin
      action: org.detach-scp
      with: {policy: kmsir-INC-42-deny-kms-destruction, targets: ["111122223333"]}
    ```
    ``policy``: its id (``p-...``) or name; ``targets``: account ids, OU ids or the root id;
    ``delete: true`` deletes the policy once it is attached nowhere else (still attached
    elsewhere: kept, and the summary says where). AWS's managed ``FullAWSAccess`` is refused.
    A policy that no longer exists is "already" detached. Run from the management account.
    Outputs: ``policy_id``, ``policy_name``, ``changed`` (the targets it detached it from),
    ``deleted``, ``still_attached`` (where it stays attached).
    """

    name = "org.detach-scp"
    params = DetachScpParams
    outputs = MappingProxyType(
        {
            "policy_id": "str|null",
            "policy_name": "str",
            "changed": "list[str]",
            "deleted": "bool",
            "still_attached": "list[str]",
        }
    )
    permissions = (
        "sts:GetCallerIdentity",
        "organizations:DescribeOrganization",
        "organizations:ListRoots",
        "organizations:ListPolicies",
        "organizations:DescribePolicy",
        "organizations:ListTargetsForPolicy",
        "organizations:DetachPolicy",
        "organizations:DeletePolicy",
    )
    mutating = True
    inverse = "org.attach-scp"

    def permissions_for(self, params: DetachScpParams) -> tuple[str, ...]:
        if params.delete:
            return self.permissions
        return tuple(p for p in self.permissions if p != "organizations:DeletePolicy")

    def api_calls(self, params: DetachScpParams) -> list[Call]:
        return self._calls(params.policy, params.targets, delete=params.delete)

    @staticmethod
    def _calls(policy_id: str, targets: list[str], *, delete: bool) -> list[Call]:
        calls = [
            Call(
                service="organizations",
                operation="DetachPolicy",
                params={"PolicyId": policy_id, "TargetId": t},
            )
            for t in targets
        ]
        if delete:
            calls.append(
                Call(
                    service="organizations",
                    operation="DeletePolicy",
                    params={"PolicyId": policy_id},
                )
            )
        return calls

    def _read(
        self, ctx: ActionContext, params: DetachScpParams
    ) -> tuple[Organisation, Policy | None, list[str]]:
        if params.policy in (FULL_ACCESS_ID, FULL_ACCESS_NAME):
            # AWS's own: refused before any read (DescribePolicy on it is outside the
            # permissions kmsir asks for)
            raise ActionError(
                f"{self.name}: {FULL_ACCESS_NAME} ({FULL_ACCESS_ID}) is managed by AWS: kmsir "
                "detaches and deletes only its own SCPs"
            )
        org = management(ctx, self.name)
        found = policy(ctx, params.policy)
        if found is not None and found.aws_managed:
            raise ActionError(
                f"{self.name}: {found.name} ({found.id}) is managed by AWS: kmsir detaches and "
                "deletes only its own SCPs"
            )
        return org, found, targets_of(ctx, found.id) if found is not None else []

    @staticmethod
    def _plan(params: DetachScpParams, attached: list[str]) -> tuple[list[str], list[str], bool]:
        """The targets to detach from, where it stays attached, and whether it is deleted."""
        wanted = [t for t in params.targets if t in attached]
        remaining = [t for t in attached if t not in params.targets]
        return wanted, remaining, params.delete and not remaining

    def preview(self, ctx: ActionContext, params: DetachScpParams) -> Preview:
        org, found, attached = self._read(ctx, params)
        if found is None:
            return Preview(
                calls=(),
                target=f"organisation {org.id}: SCP {params.policy}",
                state=f"no SCP {params.policy}: nothing attached, nothing to delete",
            )
        wanted, remaining, delete = self._plan(params, attached)
        notes = []
        if params.delete and remaining:
            notes.append(f"kept (not deleted): still attached to {', '.join(remaining)}")
        return Preview(
            calls=tuple(self._calls(found.id, wanted, delete=delete)),
            target=f"organisation {org.id}: SCP {found.name} ({found.id}) on "
            + (", ".join(map(target_label, params.targets)) or "no target"),
            state="attached to " + (", ".join(map(target_label, attached)) or "nothing"),
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: DetachScpParams) -> Outcome:
        _, found, attached = self._read(ctx, params)
        earlier = ctx.changed_by_earlier_attempt()
        now: dict[str, Any] = {
            "policy": found.summary() if found else None,
            "attached": attached,
        }
        first = earlier or now
        had = (first.get("policy") or {}) if isinstance(first.get("policy"), dict) else {}
        name = str(had.get("name") or (found.name if found else params.policy))
        wanted, remaining, delete = self._plan(params, attached)
        if found is None or (not wanted and not delete):
            if earlier is None:
                where = ", ".join(params.targets) or "anywhere"
                return Outcome(
                    outputs=self._outputs(found, name, [], remaining, deleted=False),
                    summary=f"SCP {name} was already detached from {where}: nothing sent",
                    status="already",
                    before=now,
                    after=now,
                )
        else:
            ctx.changing(first)
            org = organizations(ctx)
            for target in wanted:
                try:
                    with aws_errors(
                        f"DetachPolicy {found.id} from {target}", service="organizations"
                    ):
                        org.detach_policy(PolicyId=found.id, TargetId=target)
                except AwsError as exc:
                    if exc.code != "PolicyNotAttachedException":
                        raise
            if delete:
                with aws_errors(f"DeletePolicy {found.id}", service="organizations"):
                    org.delete_policy(PolicyId=found.id)
        after_policy = policy(ctx, found.id) if found is not None else None
        after_attached = targets_of(ctx, after_policy.id) if after_policy is not None else []
        before_attached = [str(t) for t in first.get("attached") or []]
        changed = [t for t in params.targets if t in before_attached and t not in after_attached]
        deleted = first.get("policy") is not None and after_policy is None
        kept = f"; kept: still attached to {', '.join(after_attached)}" if after_attached else ""
        outputs = self._outputs(found, name, changed, after_attached, deleted=deleted)
        outputs["policy_id"] = outputs["policy_id"] or had.get("id")
        return Outcome(
            outputs=outputs,
            summary=f"SCP {name} detached from {', '.join(changed) or 'no target'}"
            + (" and deleted" if deleted else kept),
            before=first,
            after={
                "policy": after_policy.summary() if after_policy else None,
                "attached": after_attached,
            },
        )

    @staticmethod
    def _outputs(
        found: Policy | None, name: str, changed: list[str], remaining: list[str], *, deleted: bool
    ) -> dict[str, Any]:
        return {
            "policy_id": found.id if found else None,
            "policy_name": name,
            "changed": changed,
            "deleted": deleted,
            "still_attached": remaining,
        }

    def undo(self, done: Done) -> Undo | None:
        """Attach it again where this step detached it (recreated from its content when this
        step deleted it): only for kmsir's own SCP, whose content says what to deny."""
        had = (done.before or {}).get("policy") or {}
        statements = (had.get("content") or {}).get("Statement") or []
        ours = [s for s in statements if isinstance(s, dict) and s.get("Sid") == SID]
        if done.outputs:  # finished: where it detached it, and nowhere else
            changed = [str(t) for t in done.outputs.get("changed") or []]
            deleted = bool(done.outputs.get("deleted"))
        else:  # stopped inside the step: wherever it may have detached it
            changed = [str(t) for t in done.params.get("targets") or []]
            deleted = bool(done.params.get("delete"))
        if len(statements) != 1 or not ours:
            return None
        if not changed:
            if not deleted:
                return None
            return Undo(
                IRREVERSIBLE,
                {"policy": had.get("name") or had.get("id")},
                f"SCP {had.get('name')} ({had.get('id')}) was deleted while attached to no "
                "target: org.attach-scp recreates it only with targets; its content is in the "
                "journal (the step's before state), recreate it by hand if it is wanted",
            )
        statement = ours[0]
        glass = (statement.get("Condition") or {}).get("ArnNotLike", {}).get("aws:PrincipalArn")
        glass = one_or_more(glass or [])
        actions = one_or_more(statement.get("Action") or [])
        return Undo(
            action="org.attach-scp",
            params={
                "targets": changed,
                "name": had.get("name"),
                "break_glass": glass,
                "actions": actions,
                **({"allow_lockout": True} if not glass else {}),
            },
            summary=f"attach SCP {had.get('name')} to {', '.join(changed)} again",
        )
