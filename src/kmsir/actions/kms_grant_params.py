"""Which grants ``kms.revoke-grants`` and ``kms.retire-grants`` remove: by id or by a filter,
and how long they wait for a removed grant to stop being listed."""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Params
from kmsir.actions.kmskeys import KeyParams, grantee_account
from kmsir.playbook.values import parse_time, time_parameter

#: How long (seconds) a removed grant may stay listed before the step reports it: AWS says
#: grant changes usually take effect everywhere in less than five minutes.
SETTLE_SECONDS = 30
MAX_SETTLE_SECONDS = 900


class GrantFilter(Params):
    """Which grants to remove; every criterion given must hold (AND).

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
        """Whether ``grant`` (a ListGrants entry) is one to remove."""
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
    """The key, either the grant ids or a filter, and how long to wait (seconds) for a
    removed grant to stop being listed (``settle_seconds``, 0: read the list once)."""

    grant_ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: GrantFilter | None = None
    settle_seconds: int = Field(default=SETTLE_SECONDS, ge=0, le=MAX_SETTLE_SECONDS)

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


class RetireGrantsParams(RevokeGrantsParams):
    """The key, either the grant ids or a filter, and ``settle_seconds`` (as for revoking)."""
