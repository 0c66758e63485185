"""What the SCP actions read from AWS Organizations: that the caller is the management account
of an organisation with SCPs enabled, kmsir's policy by id or name, and the SCPs attached to
each target; and whether an SCP's break-glass patterns leave kmsir's own containment free.

Only the management account creates and attaches SCPs here, and SCPs never restrict the
management account itself (AWS Organizations user guide, "Service control policies (SCPs)":
https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from kmsir.actions.base import ActionContext
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.keypolicy import principal_arn

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient

SCP: Final = "SERVICE_CONTROL_POLICY"
#: An account id, an OU id, or the organisation's root id (the Organizations API's patterns).
TARGET = re.compile(r"^(?:\d{12}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32})$")
POLICY_ID = re.compile(r"^p-[0-9a-zA-Z_]{8,128}$")


def organizations(ctx: ActionContext) -> OrganizationsClient:
    """The run's Organizations client (a global service: one endpoint for the partition)."""
    return ctx.clients.client("organizations")


def target_label(target: str) -> str:
    """``account 111122223333``, ``OU ou-ab12-cdefgh34`` or ``root r-ab12``."""
    kind = "OU" if target.startswith("ou-") else "root" if target.startswith("r-") else "account"
    return f"{kind} {target}"


@dataclass(frozen=True)
class Organisation:
    """The caller's organisation, as its management account sees it."""

    id: str
    management_account: str
    root: str
    #: Who runs the step (STS ``GetCallerIdentity``'s ARN).
    caller_arn: str = ""


def management(ctx: ActionContext, action: str) -> Organisation:
    """The organisation, once the caller proved to be its management account, with all
    features and SCPs enabled; ``ActionError`` in one line otherwise."""
    sts = ctx.clients.client("sts")
    with aws_errors("GetCallerIdentity", service="sts"):
        identity = sts.get_caller_identity()
    caller = str(identity["Account"])
    org = organizations(ctx)
    try:
        with aws_errors("DescribeOrganization", service="organizations"):
            found = org.describe_organization()["Organization"]
    except AwsError as exc:
        if exc.code == "AWSOrganizationsNotInUseException":
            raise ActionError(
                f"{action}: account {caller} belongs to no AWS organisation: there is no SCP "
                "to attach"
            ) from None
        raise
    master = str(found.get("MasterAccountId", ""))
    if master != caller:
        raise ActionError(
            f"{action}: run it from the management account {master} of organisation "
            f"{found.get('Id')}: the caller is account {caller}, which cannot create or "
            "attach SCPs"
        )
    if found.get("FeatureSet") != "ALL":
        raise ActionError(
            f"{action}: organisation {found.get('Id')} has only consolidated billing features: "
            "SCPs need all features enabled"
        )
    with aws_errors("ListRoots", service="organizations"):
        roots = org.list_roots()["Roots"]
    root = roots[0] if roots else {}
    enabled = any(
        t.get("Type") == SCP and t.get("Status") == "ENABLED" for t in root.get("PolicyTypes", [])
    )
    if not enabled:
        raise ActionError(
            f"{action}: SCPs are not enabled in organisation {found.get('Id')} (root "
            f"{root.get('Id')}): enable them first (aws organizations enable-policy-type "
            f"--root-id {root.get('Id')} --policy-type {SCP})"
        )
    return Organisation(
        id=str(found["Id"]),
        management_account=master,
        root=str(root["Id"]),
        caller_arn=str(identity.get("Arn", "")),
    )


@dataclass(frozen=True)
class Policy:
    """An SCP: its id, name, ARN, whether AWS manages it, and its content (parsed)."""

    id: str
    name: str
    arn: str
    aws_managed: bool
    content: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What the journal keeps of it (its content too: an undo may recreate it)."""
        return {"id": self.id, "name": self.name, "arn": self.arn, "content": self.content}


def policy(ctx: ActionContext, ref: str) -> Policy | None:
    """The SCP ``ref`` names (its id, or its name), ``None`` when there is none."""
    org = organizations(ctx)
    policy_id = ref if POLICY_ID.fullmatch(ref) else None
    if policy_id is None:
        with aws_errors(f"ListPolicies (SCPs) for {ref}", service="organizations"):
            pages = org.get_paginator("list_policies").paginate(Filter=SCP)
            named = [p for page in pages for p in page.get("Policies", []) if p["Name"] == ref]
        if not named:
            return None
        policy_id = str(named[0]["Id"])
    try:
        with aws_errors(f"DescribePolicy {policy_id}", service="organizations"):
            found = org.describe_policy(PolicyId=policy_id)["Policy"]
    except AwsError as exc:
        if exc.code == "PolicyNotFoundException":
            return None
        raise
    summary = found["PolicySummary"]
    try:
        content = json.loads(found.get("Content") or "{}")
    except ValueError:
        content = {}
    return Policy(
        id=str(summary["Id"]),
        name=str(summary["Name"]),
        arn=str(summary.get("Arn", "")),
        aws_managed=bool(summary.get("AwsManaged")),
        content=content if isinstance(content, dict) else {},
    )


def attached_to(ctx: ActionContext, target: str) -> list[dict[str, str]]:
    """The SCPs attached to ``target`` directly (``[{id, name}]``; inherited ones are not)."""
    org = organizations(ctx)
    with aws_errors(f"ListPoliciesForTarget {target}", service="organizations"):
        pages = org.get_paginator("list_policies_for_target").paginate(TargetId=target, Filter=SCP)
        return [
            {"id": str(p["Id"]), "name": str(p["Name"])}
            for page in pages
            for p in page.get("Policies", [])
        ]


def targets_of(ctx: ActionContext, policy_id: str) -> list[str]:
    """The ids of the roots, OUs and accounts ``policy_id`` is attached to."""
    org = organizations(ctx)
    with aws_errors(f"ListTargetsForPolicy {policy_id}", service="organizations"):
        pages = org.get_paginator("list_targets_for_policy").paginate(PolicyId=policy_id)
        return sorted(str(t["TargetId"]) for page in pages for t in page.get("Targets", []))


def lockout_notes(
    caller_arn: str, break_glass: list[str], actions: list[str], targets: list[str]
) -> list[str]:
    """The SCP denies its actions to kmsir too in the member accounts (containment there runs
    as the role kmsir assumes, ``--role-name``): said when the run's operator, as the same
    role in a target account, matches no ``break_glass`` pattern."""
    role = re.match(r"^arn:([\w-]+):iam::\d{12}:role/(.+)$", principal_arn(caller_arn))
    if role is None:
        return [
            f"the run's operator ({caller_arn or 'unknown'}) is not a role: in the targets' "
            "accounts kmsir acts as the role it assumes there (--role-name); unless "
            "break_glass covers that role, the SCP denies kmsir's own later containment "
            f"({', '.join(actions)}) there"
        ]
    partition, name = role.groups()
    # an OU's or the root's accounts are not listed here: a pattern for any account covers them
    accounts = [t if re.fullmatch(r"\d{12}", t) else "*" for t in targets]
    uncovered = list(
        dict.fromkeys(
            a
            for a in accounts
            if not any(arn_like(g, f"arn:{partition}:iam::{a}:role/{name}") for g in break_glass)
        )
    )
    if not uncovered:
        return []
    where = ", ".join("any account" if a == "*" else f"account {a}" for a in uncovered)
    return [
        f"kmsir's own containment is denied too: role {name} (the run's operator) in {where} "
        f"matches no break_glass pattern, so a later {', '.join(actions)} by kmsir "
        f"there is refused; add arn:{partition}:iam::*:role/{name} to break_glass (or the "
        "role kmsir assumes, --role-name)"
    ]


def arn_like(pattern: str, arn: str) -> bool:
    """IAM's ``ArnLike``: each of the six colon-separated parts matched on its own, ``*``
    and ``?`` wildcards within a part."""
    wanted, given = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) != 6 or len(given) != 6:
        return False
    return all(
        re.fullmatch(".*".join(".".join(map(re.escape, q.split("?"))) for q in w.split("*")), g)
        is not None
        for w, g in zip(wanted, given, strict=True)
    )
