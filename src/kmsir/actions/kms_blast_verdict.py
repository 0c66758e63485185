"""The words of ``kms.blast-radius``: one plain line per containment option and per grant.

Pure functions over the facts the action gathered (``kms_blast_who`` and
``kms_blast_enum``): who loses access now (recent callers with how many calls and when,
grantees, AWS services), which resources become unreadable (listed, or named in encryption
contexts), what stays usable in a multi-Region key's other Regions, and which resources no
recent call shows (the backups a disable breaks unnoticed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kmsir.actions.kms_blast_who import same_resource

#: Names spelled out in one line before "and N more".
NAMED = 4
AFTERWARDS = "data keys already decrypted keep working until re-fetched"


def ago(moment: str | None, now: datetime) -> str:
    """``5 min ago``, ``6 h ago``, ``3 d ago`` for an ISO time."""
    if not moment:
        return "time unknown"
    seconds = (now - datetime.fromisoformat(moment.replace("Z", "+00:00"))).total_seconds()
    if seconds < 3600:
        return f"{max(int(seconds // 60), 0)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def usage(caller: Mapping[str, Any], now: datetime) -> str:
    """``24 calls, last 6 h ago``."""
    return f"{caller['calls']} calls, last {ago(caller['last_seen'], now)}"


def names(items: list[str]) -> str:
    """``a, b and c``; past ``NAMED`` items, ``a, b, c, d and 3 more``."""
    if not items:
        return "nobody"
    shown = items[:NAMED] + ([f"{len(items) - NAMED} more"] if len(items) > NAMED else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def resources(facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources using the key, listed or named in encryption contexts, once each (an S3
    object counts as its bucket when the bucket was listed)."""
    seen: dict[str, dict[str, Any]] = {}
    for found in [*facts["configured"], *facts["context_resources"]]:
        seen.setdefault(same_resource(found["kind"], found["name"]), found)
    return list(seen.values())


def unseen(facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Listed resources that no event's encryption context names."""
    used = {same_resource(r["kind"], r["name"]) for r in facts["context_resources"]}
    return [r for r in facts["configured"] if same_resource(r["kind"], r["name"]) not in used]


def _losers(facts: Mapping[str, Any], now: datetime) -> tuple[list[str], list[str]]:
    """(who loses access: callers, grantees, services; resources that become unreadable)."""
    users = [f"{c['who']} ({usage(c, now)})" for c in facts["callers"] if c["crypto"]]
    seen = {c["who"] for c in facts["callers"] if c["crypto"]}
    for grant in facts["grants"]:
        if grant["kind"] != "service" and grant["who"] not in seen:
            seen.add(grant["who"])
            users.append(f"{grant['who']} (grant {grant['id'][:8]}, no recent call seen)")
    services = sum(1 for g in facts["grants"] if g["kind"] == "service")
    users += [f"{services} AWS service grant(s)"] if services else []
    return users, [named(r) for r in resources(facts)]


def named(resource: Mapping[str, Any]) -> str:
    """``s3-bucket payments-receipts-prod``; an EBS id with its description."""
    text = f"{resource['kind']} {resource['name']}"
    if resource["kind"].startswith("ebs-") and resource.get("note"):
        text += f" ({resource['note']})"
    return text


def _lose(items: list[str]) -> str:
    return f"{names(items)} {'loses' if len(items) == 1 else 'lose'} access"


def _who(users: list[str], lost: list[str], verb: str) -> str:
    text = _lose(users) if users else "no recent caller or grantee was seen losing access"
    if lost:
        text += f"; {len(lost)} resource(s) {verb}: {names(lost)}"
    return text


def regions(facts: Mapping[str, Any], *, every: bool) -> str:
    """What containing one Region's key of a multi-Region key leaves usable elsewhere."""
    if not facts["multi_region"]:
        return ""
    if every:
        affected = [facts["region"], *facts["replica_regions"]]
        return f"; every Region of the multi-Region key is affected: {names(affected)}"
    if facts["multi_region"] == "REPLICA":
        return (
            f"; only {facts['region']} is affected: the primary in "
            f"{facts['primary_region']} and any other replica stay usable"
        )
    if facts["replica_regions"]:
        return (
            f"; only {facts['region']} is affected: the replica(s) in "
            f"{names(facts['replica_regions'])} stay usable (replicas: true covers them)"
        )
    return ""


def verdicts(facts: Mapping[str, Any], now: datetime) -> dict[str, str]:
    """One line per containment option: ``disable``, ``schedule-deletion``, ``quarantine``,
    ``revoke-grants`` (and ``<option>-all-regions`` for a multi-Region key)."""
    users, lost = _losers(facts, now)
    state = facts["state"]
    if state in ("Disabled", "PendingDeletion"):
        disable = f"disable: the key is already {state}: nobody loses anything more"
    else:
        disable = f"disable: {_who(users, lost, 'become unreadable')}; {AFTERWARDS}"
    listed, hidden = facts["configured"], unseen(facts)
    deletion = (
        "schedule-deletion: as disable for the waiting period (7-30 days, cancellable), then "
        "everything encrypted under the key is lost for good"
    )
    if listed:
        deletion += ": " + names([named(r) for r in listed])
    if hidden and facts["events_step"]:
        deletion += (
            f"; not seen in the events, so easily forgotten: {names([named(r) for r in hidden])}"
        )
    quarantine = (
        f"quarantine: everyone but the break-glass principals: {_who(users, lost, 'with them')}"
        "; grants do not help against the key policy's Deny"
    )
    lines = {
        "disable": disable + regions(facts, every=False),
        "schedule-deletion": deletion,
        "quarantine": quarantine + regions(facts, every=False),
        "revoke-grants": _revoke(facts, now),
    }
    if facts["multi_region"] == "PRIMARY" and facts["replica_regions"]:
        lines["schedule-deletion"] += (
            "; the primary waits in PendingReplicaDeletion until its replicas in "
            f"{names(facts['replica_regions'])} are deleted"
        )
    elif facts["multi_region"]:
        lines["schedule-deletion"] += regions(facts, every=False)
    if facts["multi_region"]:
        for option in ("disable", "quarantine", "schedule-deletion"):
            base = lines[option].split("; only ", 1)[0]
            lines[f"{option}-all-regions"] = base + regions(facts, every=True)
    return lines


def _revoke(facts: Mapping[str, Any], now: datetime) -> str:
    grants = facts["grants"]
    if not grants:
        return "revoke-grants: the key has no grant: nobody loses access"
    text = "revoke-grants: only grantees lose what their grants give"
    outside = [g for g in grants if g["kind"] == "outside-account"]
    if outside:
        accounts = sorted({g["grantee"].split(":")[4] for g in outside})
        text += (
            f"; revoking the outside-account grant(s) {names([g['id'][:8] for g in outside])}:"
            f" only {_lose(accounts)}"
        )
    text += f"; all {len(grants)} grant(s): {names([g['who'] for g in grants])}"
    return text + "; key policy principals keep their access"


def grant_lines(facts: Mapping[str, Any], now: datetime) -> dict[str, str]:
    """Grant id -> who loses what when that grant alone is revoked."""
    by_who = {c["who"]: c for c in facts["callers"]}
    trusts_account = any(
        p["effect"] == "Allow" and p["who"] == f"account {facts['account']}"
        for p in facts["policy_principals"]
    )
    lines = {}
    for grant in facts["grants"]:
        head = f"revoke grant {grant['id']} ({grant['name'] or 'unnamed'})"
        caller = by_who.get(grant["who"])
        used = usage(caller, now) if caller else "no recent call seen"
        if grant["kind"] == "service":
            target = grant["for"] or "the resources it was made for"
            line = f"{head}: {grant['who']} loses access for {target}, which stop(s) working"
        elif grant["kind"] == "outside-account":
            account, _, rest = grant["who"].partition(" ")
            line = f"{head}: only {account} loses access ({rest or 'account'}: {used})"
        else:
            line = f"{head}: only {grant['who']} loses access ({used})"
            if trusts_account:
                line += "; unless IAM policies allow it: the key policy trusts the account"
        lines[grant["id"]] = line
    return lines


def dependents(facts: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Everything depending on the key, as short rows: callers, grantees, resources."""
    rows = [
        {
            "kind": "caller",
            "name": c["who"],
            "via": "calls",
            "note": f"{c['calls']} calls, {c['failed']} failed, last {ago(c['last_seen'], now)}",
        }
        for c in facts["callers"]
    ]
    rows += [
        {
            "kind": g["kind"],
            "name": g["who"],
            "via": f"grant {g['id']}",
            "note": ",".join(g["operations"])[:200],
        }
        for g in facts["grants"]
    ]
    rows += [dict(r) for r in facts["configured"]]
    rows += [
        {
            "kind": r["kind"],
            "name": r["name"],
            "via": "encryption-context",
            "note": f"{r['calls']} calls by {', '.join(r['callers'])}",
        }
        for r in facts["context_resources"]
    ]
    return rows


def summary(facts: Mapping[str, Any]) -> str:
    """The step's one-line summary."""
    outside = sum(1 for g in facts["grants"] if g["kind"] == "outside-account")
    text = (
        f"{facts['key_id']}: {len(facts['grants'])} grant(s), {outside} to outside accounts, "
        f"{len(facts['callers'])} recent caller(s), {len(resources(facts))} resource(s) "
        "using the key"
    )
    if facts["replica_regions"]:
        text += f", replicas in {', '.join(facts['replica_regions'])}"
    if facts["unchecked"]:
        text += "; unchecked: " + ", ".join(
            f"{u['service']}:{u['operation']} ({u['error']})" for u in facts["unchecked"]
        )
    return text
