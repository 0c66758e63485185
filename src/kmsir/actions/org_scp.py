"""Organisation-level containment: a service control policy that denies destroying or
locking KMS keys to everyone but break-glass roles, attached to accounts or OUs (and its
inverse, detaching it and deleting it when this run created it).

An SCP caps what every principal of a member account may do, whatever its IAM or key policy
allows; the break-glass roles are exempted with an ``ArnNotLike`` condition on
``aws:PrincipalArn`` (not ``NotPrincipal``, which SCPs do not support). SCPs never restrict
the management account, nor service-linked roles (AWS Organizations user guide, "Service
control policies (SCPs)":
https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html).
Both actions run from the management account only (``org_reads.management``).
"""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Params, Preview, Undo
from kmsir.actions.org_reads import (
    SCP,
    TARGET,
    Organisation,
    Policy,
    attached_to,
    lockout_notes,
    management,
    organizations,
    policy,
    target_label,
)
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call

#: The statement kmsir writes (its Sid tells kmsir's SCP from any other).
SID = "KmsirDenyKmsDestruction"
DEFAULT_ACTIONS = (
    "kms:ScheduleKeyDeletion",
    "kms:DeleteImportedKeyMaterial",
    "kms:DisableKey",
    "kms:PutKeyPolicy",
)
#: The largest SCP document AWS accepts, in characters (Organizations quotas).
MAX_CONTENT = 5120
_UNNAMEABLE = re.compile(r"[^\w+=,.@-]")
_NAME = re.compile(r"^[\w+=,.@ -]{1,128}$")
_ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9*?]+$")
#: A role (or user) ARN, an account's root (``arn:aws:iam::<account>:root``), or a pattern of
#: them (``*``/``?`` wildcards, any account).
_PRINCIPAL = re.compile(
    r"^arn:(?:aws[a-z-]*|\*):iam::(?:\d{12}|[\d*?]{1,12}):(?:(?:role|user)/\S+|root)$"
)
#: The most SCPs AWS lets one root, OU or account have attached directly (Organizations
#: quotas: https://docs.aws.amazon.com/organizations/latest/userguide/orgs_reference_limits.html).
MAX_ATTACHED = 5
_NEW_POLICY = "<the new policy's id>"
MANAGEMENT_NOTE = (
    "SCPs never restrict the management account (AWS Organizations user guide, "
    "https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html)"
    ": its principals keep every KMS permission their policies give"
)


def default_name(incident_id: str) -> str:
    """``kmsir-<incident>-deny-kms-destruction``, the incident id made a valid SCP name."""
    return f"kmsir-{_UNNAMEABLE.sub('-', incident_id)}"[:100] + "-deny-kms-destruction"


def content(actions: list[str], break_glass: list[str]) -> dict[str, Any]:
    """The SCP: deny ``actions`` to every principal whose ARN is none of ``break_glass``."""
    statement: dict[str, Any] = {
        "Sid": SID,
        "Effect": "Deny",
        "Action": list(actions),
        "Resource": "*",
    }
    if break_glass:
        statement["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": list(break_glass)}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def rendered(document: dict[str, Any]) -> str:
    """The content as sent: compact JSON (SCPs count every character, spaces too)."""
    return json.dumps(document, separators=(",", ":"))


def one_or_more(value: Any) -> Any:
    """A lone string as a one-item list (a parameter taking one or more)."""
    return [value] if isinstance(value, str) else value


def valid_targets(value: list[str]) -> list[str]:
    """Account, OU and root ids, each once; ``ValueError`` naming the first that is none."""
    for target in value:
        if not TARGET.fullmatch(target):
            raise ValueError(
                f"{target[:80]!r} is not an account id (12 digits), an OU id (ou-...) or the "
                "root id (r-...)"
            )
    return list(dict.fromkeys(value))


class AttachScpParams(Params):
    """``targets``: account ids, OU ids, the root id; ``break_glass``: role ARNs (or patterns)
    the policy exempts; ``name`` and ``actions`` have defaults."""

    targets: list[str] = Field(min_length=1, max_length=100)
    break_glass: list[str] = Field(default_factory=list, max_length=50)
    allow_lockout: bool = False
    name: str | None = None
    actions: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTIONS), min_length=1)

    @field_validator("targets", "break_glass", "actions", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return one_or_more(value)

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, value: list[str]) -> list[str]:
        return valid_targets(value)

    @field_validator("break_glass")
    @classmethod
    def _valid_break_glass(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _PRINCIPAL.fullmatch(arn):
                raise ValueError(
                    f"{arn[:80]!r} is not an IAM role ARN, an account root "
                    "(arn:aws:iam::<account>:root) or a pattern of them"
                )
        return list(dict.fromkeys(value))

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a valid SCP name (1-128 of [\\w+=,.@ -])")
        return value

    @field_validator("actions")
    @classmethod
    def _valid_actions(cls, value: list[str]) -> list[str]:
        for action in value:
            if not _ACTION.fullmatch(action):
                raise ValueError(f"{action[:80]!r} is not an IAM action (service:Action)")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _no_lockout(self) -> AttachScpParams:
        if not self.break_glass and not self.allow_lockout:
            raise ValueError(
                "break_glass is empty: the SCP would lock every principal of the targets out "
                "of key administration (set allow_lockout: true if that is meant)"
            )
        if len(rendered(content(self.actions, self.break_glass))) > MAX_CONTENT:
            raise ValueError(f"the SCP would exceed AWS's {MAX_CONTENT} characters")
        return self

    def document(self) -> dict[str, Any]:
        """The SCP these parameters render."""
        return content(self.actions, self.break_glass)


class AttachScp(Action[AttachScpParams]):
    """Deny destroying or locking KMS keys organisation-wide, except to break-glass roles.

    ```yaml
    - id: freeze-kms-admin
      action: org.attach-scp
      with:
        targets: ["111122223333", "ou-ab12-cdefgh34"]
        break_glass: ["arn:aws:iam::*:role/BreakGlass"]
    ```
    Creates the SCP (default name ``kmsir-<incident>-deny-kms-destruction``) denying
    ``kms:ScheduleKeyDeletion``, ``kms:DeleteImportedKeyMaterial``, ``kms:DisableKey`` and
    ``kms:PutKeyPolicy`` (``actions`` to change them) to every principal but those whose ARN
    matches ``break_glass`` (``ArnNotLike`` on ``aws:PrincipalArn``), and attaches it to each
    target (account id, OU id or root id). A policy of that name with the same content is
    reused; an empty ``break_glass`` is refused unless ``allow_lockout: true``. Run from the
    management account, which SCPs never restrict. Undo with ``org.detach-scp``.
    Outputs: ``policy_id``, ``policy_name``, ``policy_arn``, ``targets``, ``changed`` (the
    targets it attached it to), ``created`` (whether this step created the policy).
    """

    name = "org.attach-scp"
    high_impact = True  # binds every account under the target
    params = AttachScpParams
    outputs = MappingProxyType(
        {
            "policy_id": "str",
            "policy_name": "str",
            "policy_arn": "str",
            "targets": "list[str]",
            "changed": "list[str]",
            "created": "bool",
        }
    )
    permissions = (
        "sts:GetCallerIdentity",
        "organizations:DescribeOrganization",
        "organizations:ListRoots",
        "organizations:ListPolicies",
        "organizations:DescribePolicy",
        "organizations:ListPoliciesForTarget",
        "organizations:CreatePolicy",
        "organizations:AttachPolicy",
    )
    mutating = True
    inverse = "org.detach-scp"

    def api_calls(self, params: AttachScpParams) -> list[Call]:
        # the incident id is known at run time only
        name = params.name or "kmsir-<incident>-deny-kms-destruction"
        return self._calls(params, name, None, [])

    def _calls(
        self, params: AttachScpParams, name: str, found: Policy | None, missing: list[str]
    ) -> list[Call]:
        calls = []
        if found is None:
            calls.append(
                Call(
                    service="organizations",
                    operation="CreatePolicy",
                    params={
                        "Name": name,
                        "Type": SCP,
                        "Description": _description(params),
                        "Content": rendered(params.document()),
                    },
                )
            )
        pid = found.id if found is not None else _NEW_POLICY
        return calls + [
            Call(
                service="organizations",
                operation="AttachPolicy",
                params={"PolicyId": pid, "TargetId": t},
            )
            for t in (missing if found is not None else params.targets)
        ]

    def _read(
        self, ctx: ActionContext, params: AttachScpParams
    ) -> tuple[Organisation, str, Policy | None, dict[str, list[dict[str, str]]]]:
        org = management(ctx, self.name)
        name = params.name or default_name(ctx.run.incident_id)
        found = policy(ctx, name)
        if found is not None and found.content != params.document():
            raise ActionError(
                f"{self.name}: an SCP named {name!r} ({found.id}) already exists with other "
                "content: give another name, or detach and delete that one first"
            )
        return org, name, found, {t: attached_to(ctx, t) for t in params.targets}

    @staticmethod
    def _missing(found: Policy | None, attached: dict[str, list[dict[str, str]]]) -> list[str]:
        if found is None:
            return list(attached)
        return [
            t for t, policies in attached.items() if found.id not in {p["id"] for p in policies}
        ]

    def preview(self, ctx: ActionContext, params: AttachScpParams) -> Preview:
        org, name, found, attached = self._read(ctx, params)
        missing = self._missing(found, attached)
        state = "; ".join(
            f"{target_label(t)}: SCPs attached: "
            + (", ".join(f"{p['name']} ({p['id']})" for p in ps) or "none")
            for t, ps in attached.items()
        )
        exists = f"SCP {name} exists ({found.id})" if found else f"no SCP named {name} yet"
        notes = [
            f"every principal of {', '.join(params.targets)} but "
            + (", ".join(params.break_glass) or "none (allow_lockout)")
            + f" is denied {', '.join(params.actions)}, whatever its policies allow "
            "(org.detach-scp undoes this)",
            MANAGEMENT_NOTE,
        ]
        if org.management_account in params.targets:
            notes.append(f"account {org.management_account} is the management account: no effect")
        notes.extend(
            lockout_notes(org.caller_arn, params.break_glass, params.actions, params.targets)
        )
        notes.extend(
            f"{target_label(t)} already has {len(attached[t])} SCPs attached, AWS's maximum "
            f"of {MAX_ATTACHED}: AttachPolicy will be refused there; detach one first"
            for t in missing
            if len(attached[t]) >= MAX_ATTACHED
        )
        return Preview(
            calls=tuple(self._calls(params, name, found, missing)),
            target=f"organisation {org.id}: " + ", ".join(map(target_label, params.targets)),
            state=f"{exists}; {state}",
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: AttachScpParams) -> Outcome:
        _, name, found, attached = self._read(ctx, params)
        now = _state(name, found, attached)
        first = ctx.changed_by_earlier_attempt() or now
        missing = self._missing(found, attached)
        if found is not None and not missing and first is now:
            return Outcome(
                outputs=_outputs(params, found, [], created=False),
                summary=f"SCP {name} ({found.id}) was already attached to "
                f"{', '.join(params.targets)}: nothing sent",
                status="already",
                before=now,
                after=now,
            )
        if missing or found is None:
            ctx.changing(first)
            found = found or self._create(ctx, params, name)
            org = organizations(ctx)
            for target in missing:
                try:
                    with aws_errors(
                        f"AttachPolicy {found.id} to {target}", service="organizations"
                    ):
                        org.attach_policy(PolicyId=found.id, TargetId=target)
                except AwsError as exc:
                    if exc.code != "DuplicatePolicyAttachmentException":
                        raise
        after = _state(name, found, {t: attached_to(ctx, t) for t in params.targets})
        had = {t: {p["id"] for p in ps} for t, ps in (first.get("targets") or {}).items()}
        changed = [t for t in params.targets if found.id not in had.get(t, set())]
        created = first.get("policy") is None
        made = "created and attached" if created else "attached"
        return Outcome(
            outputs=_outputs(params, found, changed, created=created),
            summary=f"SCP {name} ({found.id}) {made} to {', '.join(changed) or 'no new target'}",
            before=first,
            after=after,
        )

    def _create(self, ctx: ActionContext, params: AttachScpParams, name: str) -> Policy:
        org = organizations(ctx)
        try:
            with aws_errors(f"CreatePolicy {name}", service="organizations"):
                made = org.create_policy(
                    Name=name,
                    Type=SCP,
                    Description=_description(params),
                    Content=rendered(params.document()),
                )["Policy"]
        except AwsError as exc:
            # created meanwhile (a lost response retried): the same content is reused
            again = policy(ctx, name) if exc.code == "DuplicatePolicyException" else None
            if again is None or again.content != params.document():
                raise
            return again
        summary = made["PolicySummary"]
        return Policy(summary["Id"], summary["Name"], summary["Arn"], False, params.document())

    def undo(self, done: Done) -> Undo | None:
        before = done.before or {}
        name = str(done.outputs.get("policy_name") or before.get("policy_name") or "")
        ref = str(done.outputs.get("policy_id") or name)
        if done.outputs:
            changed = [str(t) for t in done.outputs.get("changed") or []]
            created = bool(done.outputs.get("created"))
        else:  # stopped inside the step: whatever it may have attached, where it was not
            had = before.get("policy") or {}
            attached = before.get("targets") or {}
            changed = [
                str(t)
                for t in done.params.get("targets") or []
                if had.get("id") not in {p.get("id") for p in attached.get(t) or []}
            ]
            created = before.get("policy") is None
        if not ref or (not changed and not created):
            return None
        what = f"detach SCP {name or ref} from {', '.join(changed) or 'nothing'}"
        return Undo(
            action="org.detach-scp",
            params={"policy": ref, "targets": changed, "delete": created},
            summary=what + (" and delete it (this run created it)" if created else ""),
        )


def _description(params: AttachScpParams) -> str:
    return (
        f"kmsir: denies {', '.join(params.actions)} to every principal but the break-glass roles"
    )[:512]


def _state(
    name: str, found: Policy | None, attached: dict[str, list[dict[str, str]]]
) -> dict[str, Any]:
    return {
        "policy_name": name,
        "policy": found.summary() if found else None,
        "targets": attached,
    }


def _outputs(
    params: AttachScpParams, found: Policy, changed: list[str], *, created: bool
) -> dict[str, Any]:
    return {
        "policy_id": found.id,
        "policy_name": found.name,
        "policy_arn": found.arn,
        "targets": params.targets,
        "changed": changed,
        "created": created,
    }
