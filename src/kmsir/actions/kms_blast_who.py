"""Who depends on a key, from what ``kms.blast-radius`` read: grants, the key policy, events.

Pure functions (no AWS call): grants classified by grantee (an AWS service or a grant for an
AWS resource, a role, a user, an outside account), the key policy's principals, the recent
callers of a collect step's events (principal, operations, count, last seen, source IPs) and
the resources their encryption contexts name. Everything is bounded and JSON-simple: the
events are attacker-controlled, so every value is read defensively and clipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kmsir.keypolicy import principal_arn, statements
from kmsir.trail.events import clip
from kmsir.trail.fields import account_of, actor_of, event_time, name_of, params_of

#: Callers and encryption-context resources kept (the most active first).
MAX_CALLERS = 20
MAX_CONTEXT_RESOURCES = 50
MAX_POLICY_PRINCIPALS = 50
MAX_IPS = 5

#: Operations that need the key usable: a disabled or denied key refuses them.
CRYPTO_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateRandom",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
        "DeriveSharedSecret",
        "GetPublicKey",
    }
)

#: Encryption context keys AWS services write, and the kind of resource each names.
CONTEXT_KINDS = {
    "aws:s3:arn": "s3",
    "aws:ebs:id": "ebs",
    "aws:rds:db-id": "rds-instance",
    "aws:rds:dbc-id": "rds-cluster",
    "SecretARN": "secret",
    "aws:secretsmanager:arn": "secret",
    "aws:dynamodb:tableName": "dynamodb-table",
    "aws:lambda:FunctionArn": "lambda-function",
    "PARAMETER_ARN": "ssm-parameter",
    "aws:logs:arn": "log-group",
    "aws:sqs:arn": "sqs-queue",
    "aws:sns:topicArn": "sns-topic",
    "aws:backup:source-resource": "backup",
    "aws:elasticfilesystem:filesystem:id": "efs-filesystem",
    "aws:redshift:arn": "redshift",
}


def label(principal: str, key_account: str) -> str:
    """A principal as a responder names it: a role or user of the key's account by its name,
    another account by its id (and the role or user), a service by its name."""
    principal = principal_arn(principal)
    parts = principal.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        return clip(principal, 120)
    account, resource = parts[4], parts[5]
    name = resource.rsplit("/", 1)[-1] if "/" in resource else resource
    if account and account != key_account:
        kind = resource.split("/", 1)[0].replace("assumed-role", "role")
        return clip(account if resource == "root" else f"{account} {kind} {name}", 120)
    if resource == "root":
        return f"account {account}"
    return clip(name, 120)


def grantee_kind(grant: dict[str, Any], key_account: str) -> str:
    """``service`` (an AWS service, or a grant for an AWS resource), ``outside-account``,
    ``role``, ``user``, ``account`` (a root) or ``principal``."""
    grantee = str(grant.get("GranteePrincipal", ""))
    constraints = grant.get("Constraints") or {}
    context_keys = {
        str(k)
        for part in ("EncryptionContextSubset", "EncryptionContextEquals")
        for k in (constraints.get(part) or {})
    }
    if (
        grantee.endswith(".amazonaws.com")
        or ":assumed-role/aws:" in grantee
        or any(k.startswith("aws:") or k in CONTEXT_KINDS for k in context_keys)
    ):
        return "service"
    parts = grantee.split(":")
    account = parts[4] if len(parts) > 4 and parts[0] == "arn" else ""
    if account and account != key_account:
        return "outside-account"
    if ":role/" in grantee or ":assumed-role/" in grantee:
        return "role"
    if ":user/" in grantee:
        return "user"
    return "account" if grantee.endswith(":root") else "principal"


def grant_views(grants: Iterable[dict[str, Any]], key_account: str) -> list[dict[str, Any]]:
    """The grants as the blast radius shows them."""
    views = []
    for grant in grants:
        grantee = str(grant.get("GranteePrincipal", ""))
        constraints = grant.get("Constraints") or {}
        context = {
            **(constraints.get("EncryptionContextSubset") or {}),
            **(constraints.get("EncryptionContextEquals") or {}),
        }
        views.append(
            {
                "id": str(grant.get("GrantId", "")),
                "name": str(grant.get("Name") or ""),
                "grantee": grantee,
                "who": label(grantee, key_account),
                "kind": grantee_kind(grant, key_account),
                "operations": [str(o) for o in grant.get("Operations", [])],
                "for": clip(", ".join(f"{k}={v}" for k, v in context.items()), 200),
                "retiring": grant.get("RetiringPrincipal"),
            }
        )
    return views


def policy_principals(policy: dict[str, Any] | None, key_account: str) -> list[dict[str, Any]]:
    """Who the key policy's statements name (Allow and Deny), bounded."""
    found: list[dict[str, Any]] = []
    for statement in statements(policy or {}):
        principal = statement.get("Principal")
        names: list[tuple[str, str]] = []
        if principal == "*":
            names.append(("*", "everyone"))
        elif isinstance(principal, dict):
            for kind in ("AWS", "Service", "Federated"):
                value = principal.get(kind)
                for name in value if isinstance(value, list) else [value]:
                    if isinstance(name, str) and name:
                        full = f"arn:aws:iam::{name}:root" if name.isdigit() else name
                        names.append((full, kind))
        actions = statement.get("Action", statement.get("NotAction", []))
        actions = actions if isinstance(actions, list) else [actions]
        for name, kind in names:
            found.append(
                {
                    "principal": clip(name, 300),
                    "who": "everyone" if name == "*" else label(name, key_account),
                    "type": kind,
                    "effect": str(statement.get("Effect", "")),
                    "actions": [clip(str(a), 60) for a in actions[:6]],
                    "conditional": bool(statement.get("Condition")),
                }
            )
    return found[:MAX_POLICY_PRINCIPALS]


def callers(
    events: Iterable[dict[str, Any]], key_account: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(recent callers, most active first; resources named in encryption contexts)."""
    by_actor: dict[str, dict[str, Any]] = {}
    contexts: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        actor = actor_of(event)
        moment = event_time(event)
        seen = by_actor.setdefault(
            actor,
            {
                "principal": clip(actor, 300),
                "who": label(actor, key_account),
                "account": account_of(event),
                "operations": {},
                "calls": 0,
                "failed": 0,
                "crypto": 0,
                "last_seen": None,
                "last_failed": None,
                "source_ips": [],
            },
        )
        name = clip(name_of(event) or "?", 60)
        failed = bool(event.get("errorCode"))
        seen["failed" if failed else "calls"] += 1
        if not failed:
            seen["operations"][name] = seen["operations"].get(name, 0) + 1
            seen["crypto"] += name in CRYPTO_OPERATIONS
        if moment is not None:  # the last call that worked, else the last attempt
            slot = "last_failed" if failed else "last_seen"
            seen[slot] = max(moment, seen[slot] or moment)
        ip = event.get("sourceIPAddress")
        if (
            isinstance(ip, str)
            and ip not in seen["source_ips"]
            and len(seen["source_ips"]) < MAX_IPS
        ):
            seen["source_ips"].append(clip(ip, 80))
        for kind, resource in _context_resources(event):
            entry = contexts.setdefault(
                (kind, resource),
                {
                    "kind": kind,
                    "name": resource,
                    "via": "encryption-context",
                    "calls": 0,
                    "callers": [],
                    "last_seen": None,
                },
            )
            entry["calls"] += 1
            if seen["who"] not in entry["callers"] and len(entry["callers"]) < 5:
                entry["callers"].append(seen["who"])
            if moment is not None and (entry["last_seen"] is None or moment > entry["last_seen"]):
                entry["last_seen"] = moment
    ranked = sorted(by_actor.values(), key=lambda c: (-c["calls"], -c["failed"], c["principal"]))
    for caller in ranked:
        caller["last_seen"] = _iso(caller["last_seen"] or caller["last_failed"])
        caller["last_failed"] = _iso(caller["last_failed"])
    resources = sorted(contexts.values(), key=lambda r: (-r["calls"], r["kind"], r["name"]))
    for named in resources:
        named["last_seen"] = _iso(named["last_seen"])
    return ranked[:MAX_CALLERS], resources[:MAX_CONTEXT_RESOURCES]


def _context_resources(event: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(kind, resource) for each resource the event's encryption context names."""
    context = params_of(event).get("encryptionContext")
    if not isinstance(context, dict):
        return
    for key, value in list(context.items())[:20]:
        kind = CONTEXT_KINDS.get(str(key))
        if kind is None or not isinstance(value, str) or not value:
            continue
        if kind == "s3":
            kind = "s3-object" if "/" in value.removeprefix("arn:aws:s3:::") else "s3-bucket"
        elif kind == "ebs":
            kind = "ebs-snapshot" if value.startswith("snap-") else "ebs-volume"
        yield kind, clip(value, 300)


def same_resource(kind: str, name: str) -> str:
    """What identifies a resource whichever way it was named: a bucket for an S3 bucket or
    object, a secret's or parameter's name for its ARN, the last part of other ARNs."""
    if kind.startswith("s3"):
        return "s3:" + name.removeprefix("arn:aws:s3:::").split("/", 1)[0]
    if kind == "secret" and ":secret:" in name:
        name = name.split(":secret:", 1)[1]
        # Secrets Manager ends a secret's ARN with "-" and six random characters
        name = name[:-7] if len(name) > 7 and name[-7] == "-" else name
    elif kind == "ssm-parameter" and ":parameter" in name:
        name = name.split(":parameter", 1)[1]
    elif name.startswith("arn:"):
        name = name.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return f"{kind.split('-')[0]}:{name}"


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None
