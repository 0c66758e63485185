"""How the outcomes of a step that fanned out over accounts and Regions (``run.fanout``)
become one: the ``merge`` of ``kms.snapshot``, ``kms.audit``, ``cloudtrail.collect`` and
``cloudtrail.findings``.

Each target's artifacts stay in its own ``<account>/<region>/`` folder. A merge writes at
the step's root only what a single reader needs as one file: the audit's ``posture.json``
and the findings' ``findings.json``, each entry naming its account and Region. Collected
events are not copied into one file: readers (the report, the findings, the blast radius)
read every target's ``events.jsonl.gz``, listed in the collect step's ``artifacts``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kmsir.actions.base import Outcome

if TYPE_CHECKING:
    from kmsir.aws.targets import Target
    from kmsir.posture import Check


def snapshots(results: Mapping[Target, Outcome]) -> Outcome:
    """The outputs of snapshots of many keys in several accounts and Regions, as one: the
    keys in account, Region and key id order; failed keys named with their target;
    ``external_grants`` by key ARN (a multi-Region key's replicas share its id)."""
    keys: list[dict[str, Any]] = []
    external_grants: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for target, outcome in sorted(results.items()):
        found = outcome.outputs
        keys.extend(
            {**k, "account": target.account, "region": target.region} for k in found["keys"]
        )
        arns = {str(k.get("key_id")): str(k.get("arn")) for k in found["keys"]}
        external_grants.update(
            {
                arns.get(key_id) or f"{target.label}/{key_id}": grants
                for key_id, grants in found["external_grants"].items()
            }
        )
        failed.update({f"{target.label}/{k}": e for k, e in found["failed"].items()})
    external = sum(len(v) for v in external_grants.values())
    summary = f"{len(keys)} key(s) snapshotted, {external} grant(s) to outside accounts"
    if failed:
        summary += f", {len(failed)} failed ({next(iter(failed.values()))[:120]})"
    outputs = {
        "count": len(keys),
        "keys": keys,
        "external_grants": external_grants,
        "failed": failed,
    }
    return Outcome(outputs=outputs, summary=summary)


def postures(results: Mapping[Target, Outcome], read: Callable[[Target], bytes | None]) -> bytes:
    """One ``posture.json`` of the targets' reviews (``read``: a target's own): every check
    with the ``account`` and ``region`` it judged, in the usual order (practice, status, id)
    then by account and Region; the scope the sum of theirs."""
    from kmsir.posture import Review, ordered

    judged: list[tuple[Target, Check]] = []
    scopes: list[dict[str, Any]] = []
    ruleset: dict[str, str] = {}
    for target in sorted(results):
        data = read(target)
        if data is None:
            continue
        review = Review.loads(data)
        ruleset = ruleset or dict(review.ruleset)
        scopes.append({**review.scope, "target": target.label})
        judged.extend((target, check) for check in review.checks)
    judged = _global_once(judged)
    rank = {id(c): n for n, c in enumerate(ordered(c for _, c in judged))}
    judged.sort(key=lambda item: (rank[id(item[1])], item[0]))
    first = scopes[0] if scopes else {}
    scope = {
        "account": ", ".join(dict.fromkeys(t.account for t in sorted(results))),
        "region": ", ".join(dict.fromkeys(t.region for t in sorted(results))),
        "targets": [s["target"] for s in scopes],
        "keys": sum(int(s.get("keys") or 0) for s in scopes),
        "customer_managed_keys": sum(int(s.get("customer_managed_keys") or 0) for s in scopes),
        "requested": first.get("requested"),
        "started": min((str(s.get("started") or "") for s in scopes), default=""),
        "kmsir": first.get("kmsir"),
        "cut": [f"{s['target']}: {c}" for s in scopes for c in s.get("cut") or []],
        "simulated": any(s.get("simulated") is True for s in scopes),
    }
    merged = {
        "ruleset": ruleset,
        "scope": scope,
        "checks": [{**c.as_json(), "account": t.account, "region": t.region} for t, c in judged],
        "comparison": None,
    }
    return json.dumps(merged, indent=2, sort_keys=True).encode() + b"\n"


def _global_once(judged: list[tuple[Target, Check]]) -> list[tuple[Target, Check]]:
    """``judged`` less the repeats of a check on global resources only (IAM, S3: no Region
    in their ARNs), which every Region of an account judges alike: kept in its first
    Region."""
    seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
    kept: list[tuple[Target, Check]] = []
    for target, check in judged:
        everywhere = bool(check.resources) and all(
            r.startswith("arn:") and r.count(":") >= 4 and r.split(":")[3] == ""
            for r in check.resources
        )
        pair = (target.account, check.id, check.status, check.resources)
        if everywhere:
            if pair in seen:
                continue
            seen.add(pair)
        kept.append((target, check))
    return kept


#: Names, principals and addresses a merged collect keeps (as ``trail.events.summarize``).
TOP_LABELS = 50
_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def collections(results: Mapping[Target, Outcome]) -> Outcome:
    """The targets' collect outputs as one: counts summed, first and last over all, the most
    frequent names, principals and addresses; ``artifacts``: each target's events file (no
    merged copy: every reader reads them all)."""
    ordered = sorted(results.items())
    outputs: dict[str, Any] = {}
    for name in ("event_names", "principals", "source_ips", "skipped", "noted"):
        total: Counter[str] = Counter()
        for _, outcome in ordered:
            total.update(outcome.outputs.get(name) or {})
        limit = TOP_LABELS if name in ("event_names", "principals", "source_ips") else None
        outputs[name] = dict(total.most_common(limit))
    firsts = [str(o.outputs["first"]) for _, o in ordered if o.outputs.get("first")]
    lasts = [str(o.outputs["last"]) for _, o in ordered if o.outputs.get("last")]
    count = sum(int(o.outputs.get("count") or 0) for _, o in ordered)
    first_outputs = ordered[0][1].outputs
    outputs.update(
        count=count,
        first=min(firsts, default=None),
        last=max(lasts, default=None),
        errors=sum(int(o.outputs.get("errors") or 0) for _, o in ordered),
        key_arn=next((o.outputs["key_arn"] for _, o in ordered if o.outputs.get("key_arn")), None),
        window=first_outputs.get("window"),
        estimate=_longest(ordered),
        artifact=None,
        artifacts=[str(o.outputs["artifact"]) for _, o in ordered if o.outputs.get("artifact")],
        integrity=None,  # only a files or s3 collect checks digests, and those never fan out
    )
    window = outputs["window"] if isinstance(outputs["window"], dict) else {}
    summary = (
        f"{count} event(s) for {outputs['key_arn'] or 'the key'} in {len(ordered)} account/"
        f"Region target(s) from {window.get('since')} to {window.get('until')}"
    )
    skipped = sum(outputs["skipped"].values())
    if skipped:
        summary += f"; skipped {skipped} unreadable input(s)"
    return Outcome(outputs=outputs, summary=summary)


def _longest(ordered: list[tuple[Target, Outcome]]) -> dict[str, Any] | None:
    """The longest pull's ``estimate`` of a fanned-out lookup, naming its target (none told
    the responder to use Athena: ``None``)."""
    told = [(t, o.outputs["estimate"]) for t, o in ordered if o.outputs.get("estimate")]
    if not told:
        return None
    target, estimate = max(told, key=lambda item: float(item[1].get("remaining_seconds") or 0))
    return {**estimate, "target": target.label}


def findings(results: Mapping[Target, Outcome], read: Callable[[Target], bytes | None]) -> bytes:
    """One ``findings.json`` of the targets' own (``read``), each finding naming its
    ``account`` and ``region``, most severe first, then by time."""
    found: list[dict[str, Any]] = []
    for target in sorted(results):
        data = read(target)
        listed = json.loads(data) if data is not None else []
        found.extend(
            {**f, "account": target.account, "region": target.region}
            for f in listed
            if isinstance(f, dict)
        )
    found.sort(key=lambda f: (_SEVERITY_RANK.get(str(f.get("severity")), 5), str(f.get("time"))))
    return json.dumps(found, indent=2, sort_keys=True).encode() + b"\n"


def finding_outputs(
    results: Mapping[Target, Outcome], merged: list[dict[str, Any]], path: str
) -> Outcome:
    """The findings step's outputs over the merged ``findings.json`` (``merged``, at
    ``path``): counts, the first ten, the actors of every target (most severe first)."""
    ordered = sorted(results.items())
    by_severity: Counter[str] = Counter(str(f.get("severity")) for f in merged)
    skipped: Counter[str] = Counter()
    actors: list[dict[str, Any]] = []
    for target, outcome in ordered:
        skipped.update(outcome.outputs.get("skipped") or {})
        actors.extend({**a, "target": target.label} for a in outcome.outputs.get("actors") or [])
    actors.sort(key=lambda a: _SEVERITY_RANK.get(str(a.get("severity")), 5))
    top = [{k: v for k, v in f.items() if k != "details"} for f in merged[:10]]
    summary = f"{len(merged)} finding(s)"
    if merged:
        summary += ": " + ", ".join(
            f"{by_severity[s]} {s}" for s in _SEVERITY_RANK if by_severity.get(s)
        )
    outputs = {
        "count": len(merged),
        "by_severity": dict(by_severity),
        "top": top,
        "actors": actors[:20],
        "artifact": path,
        "window": ordered[0][1].outputs.get("window"),
        "skipped": dict(skipped),
    }
    return Outcome(outputs=outputs, summary=summary)
