"""``kms.audit``: the account against the ten KMS security best practices (read-only).

The keys in scope are read once, concurrently (``context.gather``); then every check runs
(``rules.evaluate``), each over the same reading, with the listings two checks share read
once. Waivers turn a known failure into ``waived`` until they expire, and an earlier review
given with ``compare`` gives practice 10 its trend. The result is ``posture.json``, beside
the API responses judged; the step succeeds whatever the checks found.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from kmsir import __version__
from kmsir.actions.audit import (
    practice_access,
    practice_data,
    practice_key_stores,
    practice_keys,
    practice_monitoring,
    practice_review,
)
from kmsir.actions.audit.context import AuditContext, gather
from kmsir.actions.audit.rules import Rule, cannot, evaluate
from kmsir.actions.base import Action, ActionContext, Outcome
from kmsir.actions.kms_snapshot import SnapshotParams
from kmsir.errors import UsageError
from kmsir.evidence.calls import Call
from kmsir.posture import PRACTICES, SEVERITIES, STATUSES, Check, Review
from kmsir.posture import compare as comparing
from kmsir.posture import waivers as waiving

if TYPE_CHECKING:
    from kmsir.aws.targets import Target

#: Every check, by practice.
RULES: tuple[Rule, ...] = (
    *practice_data.CUSTOMER_KEYS,
    *practice_access.RULES,
    *practice_monitoring.RULES,
    *practice_keys.ROTATION,
    *practice_data.ENCRYPTION,
    *practice_data.SECRETS,
    *practice_keys.ORIGIN,
    *practice_key_stores.RULES,
    *practice_keys.AUTOMATION,
)


class AuditParams(SnapshotParams):
    """What to review (``key``, ``keys`` or ``all: true``) and the account's own settings."""

    #: Principals (ARNs; ``*`` wildcards) that may hold ``kms:*`` besides the account root.
    admins: list[str] = Field(default_factory=list, max_length=1000)
    #: ``Key`` or ``Key=Value``: S3 buckets tagged so must use a customer-managed key.
    sensitive_tag: str | None = Field(default=None, min_length=1, max_length=300)
    #: Grants older than this many days are reported.
    grant_max_age_days: int = Field(default=365, ge=1, le=3650)
    #: Imported key material expiring within this many days fails.
    expiry_warning_days: int = Field(default=30, ge=1, le=3650)
    #: A YAML file of waivers (check id, resource, reason, expires).
    waivers: str | None = Field(default=None, min_length=1)
    #: An earlier review's ``posture.json`` (``kmsir audit --compare BUNDLE`` finds it).
    compare: str | None = Field(default=None, min_length=1)

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: list[str]) -> list[str]:
        for principal in value:
            if not principal.startswith("arn:"):
                raise ValueError(f"admins: {principal[:100]!r} is not an ARN")
        return value


class Audit(Action[AuditParams]):
    """Check keys and the account against the ten KMS security best practices.

    ```yaml
    - id: review
      action: kms.audit
      with: {all: true, admins: ["arn:aws:iam::111122223333:role/KeyAdmins"]}
    ```
    Writes ``posture.json`` (every check: practice, id, status, severity, resources, fix,
    doc) and the responses it judged. Outputs: ``posture`` (its artifact path), ``checks``,
    ``statuses`` (status -> count), ``failed`` (severity -> failed checks), ``keys``. With
    ``all: true`` in a run over several accounts and Regions, each is reviewed (artifacts
    under ``<account>/<region>/``) and ``posture.json`` holds every check with its
    ``account`` and ``region``; ``targets`` says which were reached.
    """

    name = "kms.audit"
    params = AuditParams
    outputs = MappingProxyType(
        {
            "posture": "str",
            "checks": "int",
            "statuses": "dict",
            "failed": "dict",
            "keys": "int",
            "targets": "list[dict]",
        }
    )
    permissions = (
        "kms:ListKeys",
        "kms:ListAliases",
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:ListGrants",
        "kms:ListResourceTags",
        "kms:GetKeyRotationStatus",
        *sorted({p for rule in RULES for p in rule.permissions}),
    )

    def api_calls(self, params: AuditParams) -> list[Call]:
        return [
            Call(service=s, operation=o)
            for s, _, o in (p.partition(":") for p in dict.fromkeys(self.permissions))
        ]

    def fans_out(self, params: AuditParams, steps: Mapping[str, Any]) -> bool:
        return params.all

    def merge(
        self,
        ctx: ActionContext,
        results: Mapping[Target, Outcome],
        failed: Mapping[Target, str],
    ) -> Outcome:
        """One ``posture.json`` at the step's root, each check naming its account and
        Region (``merges.postures``): the report's posture section reads that one file."""
        from kmsir.actions.merges import postures

        def read(target: Target) -> bytes | None:
            return ctx.artifacts.earlier(ctx.step_id, f"{target.label}/posture.json")

        data = postures(results, read)
        path = ctx.artifacts.write("posture.json", data)
        review = Review.loads(data)
        return Outcome(outputs=_outputs(review, path), summary=_summary(review))

    def run(self, ctx: ActionContext, params: AuditParams) -> Outcome:
        if params.compare is not None and params.all and ctx.scope:
            # each target would compare the whole earlier review with its own part of it
            raise UsageError(
                "compare is not supported over a run's accounts and Regions: compare in a "
                "run without --accounts/--org/--regions"
            )
        waivers = self._waivers(ctx, params)
        earlier = self._earlier(ctx, params)
        started = ctx.now()
        region = ctx.clients.resolved_region
        account = _account(ctx)
        audit = AuditContext(ctx=ctx, region=region, account=account, settings=params)
        named = params.keys or ([params.key] if params.key else [])
        references = None if params.all else list(dict.fromkeys(named))
        gather(audit, references)
        checks = evaluate(audit, RULES)
        checks.extend(_unreadable(audit))
        checks = waiving.apply(checks, waivers, started.date())
        comparison = comparing.compare(earlier, checks) if earlier is not None else None
        checks.extend(practice_review.checks(checks, comparison, started.date()))
        review = Review(
            checks=checks,
            scope={
                "account": account,
                "region": region,
                "keys": len(audit.keys),
                "customer_managed_keys": sum(1 for _ in audit.customer_keys()),
                "requested": "all" if params.all else references,
                "started": started.isoformat(),
                "kmsir": __version__,
                "cut": audit.cut,
                "simulated": ctx.run.simulated,
            },
            comparison=comparison,
        )
        path = ctx.artifacts.write("posture.json", review.dumps())
        return Outcome(outputs=_outputs(review, path), summary=_summary(review))

    @staticmethod
    def _waivers(ctx: ActionContext, params: AuditParams) -> list[waiving.Waiver]:
        if params.waivers is None:
            return []
        try:
            return waiving.load(ctx.artifacts.outside(params.waivers), params.waivers)
        except ValueError as exc:
            raise UsageError(f"waivers: {exc}") from None

    @staticmethod
    def _earlier(ctx: ActionContext, params: AuditParams) -> Review | None:
        if params.compare is None:
            return None
        try:
            return Review.loads(ctx.artifacts.outside(params.compare))
        except ValueError as exc:
            raise UsageError(f"compare: {params.compare}: {exc}") from None


def _account(ctx: ActionContext) -> str:
    from kmsir.aws import aws_errors

    with aws_errors("GetCallerIdentity", service="sts"):
        return str(ctx.clients.client("sts").get_caller_identity()["Account"])


def _unreadable(audit: AuditContext) -> list[Check]:
    """Keys that could not be described: no check can say anything of them."""
    if not audit.unreadable:
        return []
    first = next(iter(audit.unreadable.values()))
    rule = Rule(
        id="keys-readable",
        practice=2,
        title="Every key in scope can be described",
        severity="medium",
        fix="Give the reviewing role kms:DescribeKey on every key (the key policies too).",
        doc=PRACTICES[2].doc,
        judge=lambda _: (),
    )
    return [rule.check(cannot(first, audit.unreadable))]


def _outputs(review: Review, path: str) -> dict[str, Any]:
    statuses = {s: sum(1 for c in review.checks if c.status == s) for s in STATUSES}
    failed = {s: sum(1 for c in review.failures() if c.severity == s) for s in SEVERITIES}
    return {
        "posture": path,
        "checks": len(review.checks),
        "statuses": statuses,
        "failed": {s: n for s, n in failed.items() if n},
        "keys": review.scope.get("keys", 0),
    }


def _summary(review: Review) -> str:
    failures = review.failures()
    worst = failures[0] if failures else None
    counts = ", ".join(
        f"{n} {s}" for s in STATUSES if (n := sum(1 for c in review.checks if c.status == s))
    )
    text = f"{review.scope.get('keys', 0)} key(s) reviewed: {counts or 'no checks'}"
    if worst is not None:
        text += f"; worst: {worst.severity} {worst.id} ({len(worst.resources)} resource(s))"
    return text
