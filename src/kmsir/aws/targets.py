"""The accounts and Regions a run covers (its scope), and clients in each of its accounts.

``resolve_scope`` turns ``--accounts``/``--org``/``--exclude``/``--regions`` into a ``Scope``
once, before the run: the caller's account (STS ``GetCallerIdentity``), the organisation's
active accounts (Organizations ``ListAccounts``), the Regions enabled for the account (EC2
``DescribeRegions``). The scope is recorded in the run-started entry, so ``kmsir resume``
rebuilds it from there (``Scope.from_json``) without asking Organizations again.

A ``Fleet`` holds the scope and a ``ClientFactory`` per account: the caller's own account is
reached with the caller's credentials; every other one through STS ``AssumeRole`` of
``arn:<partition>:iam::<account>:role/<role-name>``, made lazily at the account's first
client, with credentials that botocore refreshes before they expire
(``AssumeRoleCredentialFetcher`` and ``DeferredRefreshableCredentials``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kmsir.aws import ClientFactory, SessionFactory, aws_errors
from kmsir.aws.assumed import AccountClients, Now, assumed_session
from kmsir.errors import UsageError

#: An AWS account id.
ACCOUNT = re.compile(r"\d{12}", re.ASCII)
#: An AWS Region name (``eu-west-1``, ``us-gov-west-1``).
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d", re.ASCII)
#: An IAM role name (up to 64 characters), with its path if it has one.
ROLE_NAME = re.compile(r"([\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII)
#: STS's ``ExternalId``: 2 to 1224 characters of ``[\w+=,.@:/-]``.
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
#: What STS accepts in a role session name; anything else becomes ``-``.
_NOT_IN_SESSION_NAME = re.compile(r"[^\w+=,.@-]", re.ASCII)
#: STS's longest role session name.
SESSION_NAME_MAX = 64
#: What AWS answers to a request in a Region the account has not enabled (an opt-in Region):
#: the credentials are unknown there, not refused.
REGION_NOT_ENABLED = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure"}
)


def explain(error: Exception, account: str, region: str) -> str:
    """A target's error in one line, saying when it is likely a Region ``account`` has not
    enabled (opt-in Regions, such as af-south-1, are enabled per account: "Specify which AWS
    Regions your account can use", https://docs.aws.amazon.com/accounts/latest/reference/manage-acct-regions.html)."""
    message = str(error)
    # AssumeRole's own refusal of the caller's credentials is no Region's doing
    if getattr(error, "code", None) in REGION_NOT_ENABLED and "AssumeRole" not in message:
        message += (
            f" (is Region {region} enabled for account {account}? opt-in Regions must be "
            "enabled per account)"
        )
    return message


def session_name(incident_id: str) -> str:
    """The role session name of a run's AssumeRole calls (CloudTrail shows it in each
    account): ``kmsir-<incident>``, with characters STS refuses replaced by ``-``, cut to
    STS's 64 characters."""
    return _NOT_IN_SESSION_NAME.sub("-", f"kmsir-{incident_id}")[:SESSION_NAME_MAX]


@dataclass(frozen=True, order=True)
class Target:
    """One account in one Region of a run's scope."""

    account: str
    region: str

    @property
    def label(self) -> str:
        """``111122223333/eu-west-1``: also where its artifacts go in a step's folder."""
        return f"{self.account}/{self.region}"


@dataclass(frozen=True)
class Scope:
    """The accounts x Regions a run covers, and how the other accounts are reached."""

    caller_account: str
    #: Sorted and unique, the caller's own first when it is included.
    accounts: tuple[str, ...]
    regions: tuple[str, ...]
    #: The role assumed in every account but the caller's.
    role_name: str | None = None
    external_id: str | None = None
    #: The accounts came from Organizations ``ListAccounts`` (``--org``).
    org: bool = False
    #: ``--exclude``: accounts of the organisation left out.
    excluded: tuple[str, ...] = ()

    def targets(self) -> tuple[Target, ...]:
        """Every account in every Region: account by account, Regions in order."""
        return tuple(Target(a, r) for a in self.accounts for r in self.regions)

    def to_json(self) -> dict[str, Any]:
        """The scope as the run-started entry records it."""
        return {
            "caller_account": self.caller_account,
            "accounts": list(self.accounts),
            "regions": list(self.regions),
            "role_name": self.role_name,
            "external_id": self.external_id,
            "org": self.org,
            "excluded": list(self.excluded),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scope:
        """The scope a run recorded (``to_json``); one that does not read: ``UsageError``."""

        def strings(name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
            value = data.get(name)
            if not isinstance(value, list) or not all(
                isinstance(v, str) and pattern.fullmatch(v) for v in value
            ):
                raise UsageError(f"the run's recorded scope: {name} is not a list of ids")
            return tuple(value)

        def optional(name: str) -> str | None:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"the run's recorded scope: {name} is not a string")
            return value

        if not isinstance(data, Mapping):
            raise UsageError("the run's recorded scope is not an object")
        caller = data.get("caller_account")
        if not isinstance(caller, str) or not ACCOUNT.fullmatch(caller):
            raise UsageError("the run's recorded scope: caller_account is not an account id")
        accounts, regions = strings("accounts", ACCOUNT), strings("regions", REGION)
        if not accounts or not regions:
            raise UsageError("the run's recorded scope names no account or no Region")
        return cls(
            caller_account=caller,
            accounts=accounts,
            regions=regions,
            role_name=optional("role_name"),
            external_id=optional("external_id"),
            org=data.get("org") is True,
            excluded=strings("excluded", ACCOUNT) if data.get("excluded") else (),
        )


@dataclass(frozen=True)
class ScopeRequest:
    """The scope options of a command line, before they are resolved (``resolve``)."""

    accounts: tuple[str, ...] = ()
    org: bool = False
    exclude: tuple[str, ...] = ()
    role_name: str | None = None
    external_id: str | None = None
    regions: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        """Any scope option was given: without one, a run covers its own account and
        Region as it always did (no fan-out, no Fleet)."""
        return bool(
            self.accounts
            or self.org
            or self.exclude
            or self.regions
            or self.role_name
            or self.external_id
        )

    def check(self) -> None:
        """Refuse bad values and conflicting options without calling AWS (``UsageError``)."""
        check_request(
            accounts=self.accounts,
            org=self.org,
            exclude=self.exclude,
            role_name=self.role_name,
            external_id=self.external_id,
            regions=self.regions,
        )

    def resolve(self, base: ClientFactory) -> Scope:
        """``resolve_scope`` with these options."""
        return resolve_scope(
            base,
            accounts=self.accounts,
            org=self.org,
            exclude=self.exclude,
            role_name=self.role_name,
            external_id=self.external_id,
            regions=self.regions,
        )


def check_request(
    *,
    accounts: Sequence[str],
    org: bool,
    exclude: Sequence[str],
    role_name: str | None,
    external_id: str | None,
    regions: Sequence[str],
) -> None:
    """The checks of ``resolve_scope`` that need no AWS call: each value's form, and options
    that go only together. One-line ``UsageError``."""
    for option, values in (("--accounts", accounts), ("--exclude", exclude)):
        for value in values:
            if not ACCOUNT.fullmatch(value):
                raise UsageError(f"{option} {value!r}: not an AWS account id (12 digits)")
    if "all" in regions:
        if len(regions) > 1:
            raise UsageError("--regions all: 'all' stands alone, without other Regions")
    else:
        for value in regions:
            if not REGION.fullmatch(value):
                raise UsageError(f"--regions {value!r}: not an AWS Region (such as eu-west-1)")
    if accounts and org:
        raise UsageError("--accounts and --org: give one of them, not both")
    if exclude and not org:
        raise UsageError("--exclude: only with --org (it leaves accounts of the organisation out)")
    if role_name is not None and not ROLE_NAME.fullmatch(role_name):
        raise UsageError(f"--role-name {role_name!r}: not an IAM role name")
    if role_name is not None and not (accounts or org):
        raise UsageError("--role-name: only with --accounts or --org")
    if external_id is not None and role_name is None:
        raise UsageError("--external-id: only with --role-name")
    if external_id is not None and not EXTERNAL_ID.fullmatch(external_id):
        raise UsageError("--external-id: 2 to 1224 characters of letters, digits and +=,.@:/_-")


def resolve_scope(
    base: ClientFactory,
    *,
    accounts: Sequence[str],
    org: bool,
    exclude: Sequence[str],
    role_name: str | None,
    external_id: str | None,
    regions: Sequence[str],
) -> Scope:
    """The scope the options name, with ``base`` (the caller's clients) for what must be
    asked: who the caller is, the organisation's accounts (``org``), the enabled Regions
    (``regions == ["all"]``; none given: the run's Region). A bad value or conflicting
    options: ``UsageError``; a refused call: ``AwsError``; each one line."""
    check_request(
        accounts=accounts,
        org=org,
        exclude=exclude,
        role_name=role_name,
        external_id=external_id,
        regions=regions,
    )
    with aws_errors("the run's scope: GetCallerIdentity", service="sts"):
        caller = str(base.client("sts").get_caller_identity()["Account"])
    if org:
        listed = organisation_accounts(base)
        chosen = [a for a in listed if a not in set(exclude)]
        if not chosen:
            raise UsageError("--org: no active account of the organisation is left to cover")
    else:
        chosen = list(accounts) or [caller]
    others = sorted(set(chosen) - {caller})
    if others and role_name is None:
        option = "--org" if org else f"--accounts {others[0]}"
        raise UsageError(
            f"{option}: an account other than yours ({caller}) needs --role-name, the role "
            "kmsir assumes in it"
        )
    if list(regions) == ["all"]:
        region_list = enabled_regions(base)
    else:
        region_list = list(dict.fromkeys(regions)) or [base.resolved_region]
    return Scope(
        caller_account=caller,
        accounts=tuple(([caller] if caller in chosen else []) + others),
        regions=tuple(region_list),
        role_name=role_name,
        external_id=external_id,
        org=org,
        excluded=tuple(sorted(set(exclude))),
    )


def organisation_accounts(base: ClientFactory) -> list[str]:
    """The organisation's active accounts (Organizations ``ListAccounts``, every page):
    ``Status`` (or the newer ``State``) ACTIVE; suspended and closing ones left out."""
    found: list[str] = []
    with aws_errors("--org: Organizations ListAccounts", service="organizations"):
        pages = base.client("organizations").get_paginator("list_accounts").paginate()
        for page in pages:
            for account in page.get("Accounts", []):
                state = account.get("State") or account.get("Status")
                if state == "ACTIVE" and "Id" in account:
                    found.append(account["Id"])
    return sorted(set(found))


def enabled_regions(base: ClientFactory) -> list[str]:
    """The Regions enabled for the caller's account (EC2 ``DescribeRegions``, without those
    not opted in)."""
    with aws_errors("--regions all: EC2 DescribeRegions", service="ec2"):
        answer = base.client("ec2").describe_regions(AllRegions=False)
    regions = sorted(r["RegionName"] for r in answer.get("Regions", []) if "RegionName" in r)
    if not regions:
        raise UsageError("--regions all: DescribeRegions named no enabled Region")
    return regions


class Fleet:
    """The run's scope and a ClientFactory per account."""

    def __init__(
        self, base: ClientFactory, scope: Scope, session_name: str, *, now: Now | None = None
    ) -> None:
        self.base = base
        self.scope = scope
        self.session_name = session_name
        #: The clock by which assumed credentials are refreshed (botocore's by default).
        self._now = now
        self._lock = threading.Lock()
        self._accounts: dict[str, ClientFactory] = {}

    def clients(self, account: str) -> ClientFactory:
        """The base factory itself for the caller's account; for another account of the
        scope, a factory whose session holds the assumed role's refreshable credentials
        (AssumeRole made at its first client; a refusal is an ``AwsError`` naming the
        account and the role). Its ``check_mode``, ``recorder`` and ``intent_recorder`` are
        always the base factory's. An account outside the scope: ``UsageError``."""
        if account == self.scope.caller_account:
            return self.base
        if account not in self.scope.accounts:
            raise UsageError(
                f"account {account} is not in the run's scope ({', '.join(self.scope.accounts)})"
            )
        with self._lock:
            found = self._accounts.get(account)
            if found is None:
                found = AccountClients(self.base, self._assumed(account), account)
                self._accounts[account] = found
            return found

    def role_arn(self, account: str) -> str:
        """The role assumed in ``account``, in the partition of the run's Region."""
        if self.scope.role_name is None:
            raise UsageError(f"account {account}: no --role-name to assume in it")
        region = self.base.resolved_region
        partition = self.base.session().get_partition_for_region(region)
        return f"arn:{partition}:iam::{account}:role/{self.scope.role_name}"

    def _assumed(self, account: str) -> SessionFactory:
        """How ``account``'s session is made (``assumed.assumed_session``)."""
        return assumed_session(
            self.base,
            role_arn=self.role_arn(account),
            session_name=self.session_name,
            external_id=self.scope.external_id,
            what=f"account {account}: AssumeRole of {self.role_arn(account)}",
            now=self._now,
        )
