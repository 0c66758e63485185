"""Deny named principals or accounts every use of a key: the targeted ``kms.quarantine``.

An outside account cannot be contained through this account's IAM, but the key policy can
shut it out: one explicit Deny statement (Sid ``kmsir-deny-principals``) for exactly the
principals named, on ``kms:*``. Everyone else keeps the access they had. The change goes the
path of every key policy change (``policy_change.PolicyChange``): our lockout check and AWS's,
the policy before kept as ``policy-before.json``, and ``kms.restore-policy`` to put it back.
The caller itself (and the identity behind its session, or an account holding either) is
refused (``iam_responder``).
"""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import ActionContext, Preview
from kmsir.actions.iam_responder import responder
from kmsir.actions.kmskeys import KeyInfo, KeyParams
from kmsir.actions.policy_change import PolicyChange
from kmsir.keypolicy import statements

SID = "kmsir-deny-principals"
_PRINCIPAL = re.compile(r"^(?:\d{12}|arn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\w+=,.@/-]+)$")
_SESSION = re.compile(r"^arn:aws[a-z-]*:sts::\d{12}:assumed-role/")


class DenyPrincipalsParams(KeyParams):
    """The key, the principals to deny (ARNs or 12-digit account ids), the lockout override."""

    principals: list[str] = Field(min_length=1, max_length=50)
    allow_lockout: bool = False

    @field_validator("principals")
    @classmethod
    def _principals(cls, value: list[str]) -> list[str]:
        found = [v.strip() for v in value]
        for principal in found:
            if not _PRINCIPAL.fullmatch(principal):
                raise ValueError(
                    f"{principal[:80]!r} is not an IAM principal ARN or a 12-digit account id "
                    "(to deny everyone, use kms.quarantine)"
                )
        return list(dict.fromkeys(found))


def as_principal(value: str, partition: str) -> str:
    """A key policy principal: an account id becomes the account's root ARN."""
    return f"arn:{partition}:iam::{value}:root" if value.isdigit() else value


def _listed(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    found = principal.get("AWS") if isinstance(principal, dict) else None
    if found is None:
        return []
    return [str(p) for p in (found if isinstance(found, list) else [found])]


class DenyPrincipals(PolicyChange):
    """Deny exactly the named principals or accounts every KMS action on the key.

    ```yaml
    - id: deny-outsider
      action: kms.deny-principals
      with:
        key: "{{ steps.snapshot.key_id }}"
        principals: ["444455556666", "arn:aws:iam::111122223333:role/ci-deploy"]
    ```
    One explicit Deny (Sid ``kmsir-deny-principals``, ``kms:*``) for those principals; a
    principal an earlier step denied stays denied. An account id denies every principal of
    that account; an assumed-role session ARN only that session (name its role to deny them
    all). Refused for the caller itself, the identity behind its session and their accounts;
    the lockout check is that of ``kms.quarantine``. Undo with ``kms.restore-policy``
    (``from:`` this step; ``PolicyChange.undo`` names its ``policy-before.json``).
    """

    name = "kms.deny-principals"
    high_impact = True  # a Deny statement: those named lose access
    params = DenyPrincipalsParams
    outputs = MappingProxyType(
        {"key_id": "str", "restore_from": "str", "able_to_manage": "list[str]"}
    )

    def new_policy(
        self,
        ctx: ActionContext,
        params: DenyPrincipalsParams,
        current: dict[str, Any],
        info: KeyInfo,
    ) -> dict[str, Any]:
        found = responder(ctx)
        for principal in params.principals:
            found.refuse_principal(self.name, principal)
        partition = info.arn.split(":")[1]
        kept = statements(current)
        earlier = next((s for s in kept if s.get("Sid") == SID), None)
        denied = list(
            dict.fromkeys(
                [
                    *(_listed(earlier) if earlier else []),
                    *(as_principal(p, partition) for p in params.principals),
                ]
            )
        )
        deny: dict[str, Any] = {
            "Sid": SID,
            "Effect": "Deny",
            "Principal": {"AWS": denied},
            "Action": "kms:*",
            "Resource": "*",
        }
        if earlier is not None and {**earlier, "Principal": {"AWS": _listed(earlier)}} == deny:
            deny = earlier  # already as wanted, whatever form AWS keeps it in
        if earlier is None:
            return {**current, "Statement": [*kept, deny]}
        return {**current, "Statement": [deny if s is earlier else s for s in kept]}

    def preview(self, ctx: ActionContext, params: DenyPrincipalsParams) -> Preview:
        shown = super().preview(ctx, params)
        sessions = [p for p in params.principals if _SESSION.match(p)]
        notes = (
            f"denies only the session{'s' if len(sessions) > 1 else ''} "
            f"{', '.join(sessions)}, not other sessions of the role: name the role ARN to deny "
            "them all",
        )
        return dataclasses.replace(shown, notes=shown.notes + (notes if sessions else ()))
