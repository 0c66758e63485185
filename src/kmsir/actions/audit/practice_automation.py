"""Practice 8 (manage keys as code): which customer-managed keys CloudFormation manages, and
what CloudFormation last found when it compared them with their templates (drift).

A key is CloudFormation's when its tags name a stack (``aws:cloudformation:stack-name``,
which CloudFormation adds to the resources it creates, though propagation "varies by
resource type"), or when a stack lists it among its resources (``ListStackResources``): keys
imported into a stack carry no such tag, and emulators give none. The stacks are read only
when some key has no stack tag, at most ``MAX_STACKS`` of them.

Drift is read, never detected: ``DetectStackDrift`` would start work in the account, and the
review is read-only. A stack never checked says so; the fix says how to check it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable
from kmsir.actions.audit.keysets import arns, day, each, evidence, names, staying
from kmsir.actions.audit.rules import Result, Rule, cannot

#: Stacks whose resources are read, at most (a cut is said in the review's scope).
MAX_STACKS = 200
STACK_NAME_TAG = "aws:cloudformation:stack-name"
STACK_ID_TAG = "aws:cloudformation:stack-id"
KEY_TYPE = "AWS::KMS::Key"
#: Every stack status but DELETE_COMPLETE (ListStacks lists deleted stacks for 90 days).
_LIVE = (
    "CREATE_IN_PROGRESS",
    "CREATE_FAILED",
    "CREATE_COMPLETE",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED",
    "ROLLBACK_COMPLETE",
    "DELETE_IN_PROGRESS",
    "DELETE_FAILED",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE",
    "REVIEW_IN_PROGRESS",
    "IMPORT_IN_PROGRESS",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_IN_PROGRESS",
    "IMPORT_ROLLBACK_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
)
_CFN = "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/"


@dataclass
class Managed:
    """The keys in scope (not pending deletion) by whether CloudFormation manages them."""

    #: Key ARN -> its stack (the stack id when known, else its name).
    stacks: dict[str, str] = field(default_factory=dict)
    unmanaged: list[KeyFacts] = field(default_factory=list)
    #: Keys with no stack tag whose stacks could not be read, and why.
    unknown: list[KeyFacts] = field(default_factory=list)
    refusal: Unavailable | None = None
    evidence: tuple[str, ...] = ()
    #: Keys pending deletion left aside (``staying``'s note).
    aside: str = ""
    #: Said when not every stack's resources were read.
    cut: str = ""


def stack_name(stack: str) -> str:
    """A stack's name from its id (``arn:aws:cloudformation:...:stack/NAME/UUID``) or name."""
    return stack.split("/")[1] if stack.startswith("arn:") and "/" in stack else stack


def _key_stacks(audit: AuditContext) -> tuple[dict[str, str], str, str]:
    """Key id -> the id of the stack holding it, from every live stack's resources (at most
    ``MAX_STACKS`` stacks); read once per review. And the evidence path, and the cut."""

    def read() -> tuple[dict[str, str], str, str]:
        stacks = audit.pages(
            "cloudformation",
            "ListStacks",
            "list_stacks",
            "StackSummaries",
            StackStatusFilter=_LIVE,
        )
        stacks = [s for s in stacks if s.get("StackStatus") != "DELETE_COMPLETE"]
        cut = ""
        if len(stacks) > MAX_STACKS:
            cut = f"the resources of {MAX_STACKS} of {len(stacks)} stacks were read"
            audit.cut.append(f"cloudformation: {cut}")
            stacks = stacks[:MAX_STACKS]

        def keys_of(stack: dict[str, Any]) -> list[dict[str, Any]]:
            try:
                found = audit.pages(
                    "cloudformation",
                    "ListStackResources",
                    "list_stack_resources",
                    "StackResourceSummaries",
                    StackName=stack["StackId"],
                )
            except Unavailable as exc:
                if exc.code == "ValidationError":  # deleted since it was listed
                    return []
                raise
            return [
                {**r, "StackId": stack["StackId"], "StackName": stack["StackName"]}
                for r in found
                if r.get("ResourceType") == KEY_TYPE
            ]

        resources = [r for found in each(keys_of, stacks) for r in found]
        path = audit.evidence(
            "cloudformation/key-stacks",
            {"StackSummaries": stacks, "KeyResources": resources},
        )
        by_key = {}
        for resource in resources:
            physical = str(resource.get("PhysicalResourceId") or "")
            by_key[physical.rsplit("/", 1)[-1]] = str(resource["StackId"])
        return by_key, path, cut

    return audit.shared("cloudformation/key-stacks", read)


def managed(audit: AuditContext) -> Managed:
    """The keys in scope by CloudFormation stack; read once per review."""

    def read() -> Managed:
        keys, aside = staying(audit.customer_keys())
        found = Managed(aside=aside)
        rest: list[KeyFacts] = []
        for key in keys:
            tags = key.tags or {}
            stack = tags.get(STACK_ID_TAG) or tags.get(STACK_NAME_TAG)
            if stack:
                found.stacks[key.arn] = stack
            else:
                rest.append(key)
        if not rest:
            return found
        try:
            listed, path, found.cut = _key_stacks(audit)
        except Unavailable as exc:
            found.unknown, found.refusal = rest, exc
            return found
        found.evidence = (path,)
        for key in rest:
            if key.key_id in listed:
                found.stacks[key.arn] = listed[key.key_id]
            else:
                found.unmanaged.append(key)
        return found

    return audit.shared("practice-8/managed", read)


def _as_code(audit: AuditContext) -> Iterator[Result]:
    found = managed(audit)
    keys = {k.arn: k for k in audit.customer_keys()}
    if not (found.stacks or found.unmanaged or found.unknown):
        yield Result("not-applicable", detail="no customer-managed key in scope" + found.aside)
        return
    if found.unknown and found.refusal is not None:
        yield cannot(found.refusal, arns(found.unknown))
    if found.unmanaged:
        yield Result(
            "info",
            arns(found.unmanaged),
            f"{len(found.unmanaged)} key(s) not managed by CloudFormation (no {STACK_NAME_TAG} "
            f"tag, in no stack's resources{'; ' + found.cut if found.cut else ''}): "
            f"{names(found.unmanaged)}; keys kept as code by "
            "another tool (Terraform, Pulumi...) are listed here too" + found.aside,
            evidence(found.unmanaged, "tags") + found.evidence,
        )
    if found.stacks:
        kept = [keys[a] for a in found.stacks if a in keys]
        yield Result(
            "pass",
            tuple(found.stacks),
            f"{len(found.stacks)} key(s) managed by CloudFormation: "
            + names(kept, lambda k: f"{k.label()} (stack {stack_name(found.stacks[k.arn])})")
            + found.aside,
            evidence(kept, "tags") + found.evidence,
        )


def _drifts(audit: AuditContext, stack: str) -> tuple[list[dict[str, Any]], str]:
    """The stack's resources CloudFormation last found MODIFIED or DELETED (read-only)."""
    cfn = audit.client("cloudformation")

    def page(more: dict[str, Any]) -> Any:
        return cfn.describe_stack_resource_drifts(
            StackName=stack,
            StackResourceDriftStatusFilters=["MODIFIED", "DELETED"],
            MaxResults=100,
            **more,
        )

    drifts: list[dict[str, Any]] = []
    more: dict[str, Any] = {}
    for _ in range(10):  # 100 resources a page: 1000 drifted resources are enough to say it
        read = audit.call("cloudformation", "DescribeStackResourceDrifts", partial(page, more))
        drifts.extend(read.get("StackResourceDrifts") or [])
        if not read.get("NextToken"):
            break
        more = {"NextToken": read["NextToken"]}
    path = audit.evidence(
        f"cloudformation/drifts-{stack_name(stack)}", {"StackResourceDrifts": drifts}
    )
    return [d for d in drifts if d.get("ResourceType") == KEY_TYPE], path


def _stack_drift(audit: AuditContext, stack: str, keys: list[str]) -> list[Result]:
    name = stack_name(stack)
    cfn = audit.client("cloudformation")
    try:
        described = audit.call(
            "cloudformation", "DescribeStacks", lambda: cfn.describe_stacks(StackName=stack)
        )
    except Unavailable as exc:
        if exc.code == "ValidationError":
            return [Result("info", tuple(keys), f"stack {name} no longer exists")]
        return [cannot(exc, keys)]
    found = described.get("Stacks") or [{}]
    path = audit.evidence(f"cloudformation/stack-{name}", {"Stacks": found})
    drift = found[0].get("DriftInformation") or {}
    status = drift.get("StackDriftStatus")
    checked = day(drift.get("LastCheckTimestamp"))
    if not status:
        return [
            Result(
                "could-not-check",
                tuple(keys),
                f"DescribeStacks gave no DriftInformation for stack {name} (AWS always does; an "
                "emulator such as moto does not model drift detection)",
                (path,),
                missing="DriftInformation in the DescribeStacks response",
            )
        ]
    said = {
        "NOT_CHECKED": f"drift was never detected on stack {name}: whether its keys still "
        "match the template is unknown",
        "IN_SYNC": f"stack {name} matched its template at its last drift check ({checked})",
        "UNKNOWN": f"drift detection could not run for a resource of stack {name} "
        f"(last check {checked})",
    }
    if status != "DRIFTED":
        return [
            Result("info", tuple(keys), said.get(status, f"stack {name}: drift {status}"), (path,))
        ]
    try:
        drifted, drift_path = _drifts(audit, stack)
    except Unavailable as exc:
        return [
            Result(
                "info",
                tuple(keys),
                f"stack {name} has drifted (last check {checked}); "
                f"which keys could not be read: {exc.detail}",
                (path,),
            )
        ]
    by_id = {k.rsplit("/", 1)[-1]: k for k in keys}
    lines = {}
    for item in drifted:
        arn = by_id.get(str(item.get("PhysicalResourceId", "")).rsplit("/", 1)[-1])
        if arn is not None:
            changed = sorted(
                {str(p.get("PropertyPath", "")) for p in item.get("PropertyDifferences") or []}
            )
            lines[arn] = f"{arn.rsplit('/', 1)[-1]} {item.get('StackResourceDriftStatus')}" + (
                f" ({', '.join(changed)})" if changed else ""
            )
    results = []
    if lines:
        results.append(
            Result(
                "info",
                tuple(lines),
                f"keys drifted from stack {name}'s template (last check "
                f"{checked}): {'; '.join(lines.values())}",
                (path, drift_path),
            )
        )
    others = tuple(k for k in keys if k not in lines)
    if others:
        results.append(
            Result(
                "info",
                others,
                f"stack {name} has drifted (last check {checked}), not in its keys",
                (path, drift_path),
            )
        )
    return results


def _drift(audit: AuditContext) -> Iterator[Result]:
    found = managed(audit)
    if found.unknown and found.refusal is not None:
        yield cannot(found.refusal, arns(found.unknown))
    if not found.stacks:
        if not found.unknown:
            yield Result(
                "not-applicable",
                detail="no key in scope is managed by CloudFormation" + found.aside,
            )
        return
    by_stack: dict[str, list[str]] = {}
    for arn, stack in found.stacks.items():
        by_stack.setdefault(stack, []).append(arn)
    stacks = sorted(by_stack)
    for results in each(lambda s: _stack_drift(audit, s, by_stack[s]), stacks):
        yield from results


AUTOMATION: tuple[Rule, ...] = (
    Rule(
        id="keys-managed-as-code",
        practice=8,
        title="Customer-managed keys and their policies are managed by CloudFormation",
        severity="info",
        fix=(
            "Define keys and their policies in a template (AWS::KMS::Key, AWS::KMS::Alias), or "
            "import existing keys into a stack (CloudFormation resource import); keys kept as "
            "code by another tool can be waived."
        ),
        doc="https://docs.aws.amazon.com/kms/latest/developerguide/"
        "creating-resources-with-cloudformation.html",
        judge=_as_code,
        permissions=("cloudformation:ListStacks", "cloudformation:ListStackResources"),
    ),
    Rule(
        id="cloudformation-drift",
        practice=8,
        title="Stacks holding keys match their templates, as CloudFormation last found",
        severity="info",
        fix=(
            "Detect drift on the stack (aws cloudformation detect-stack-drift --stack-name NAME), "
            "then bring drifted keys back to the template (update the stack or the key)."
        ),
        doc=_CFN + "using-cfn-stack-drift.html",
        judge=_drift,
        permissions=(
            "cloudformation:ListStacks",
            "cloudformation:ListStackResources",
            "cloudformation:DescribeStacks",
            "cloudformation:DescribeStackResourceDrifts",
        ),
    ),
)
