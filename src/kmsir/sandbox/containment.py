"""Containment in the sandbox: would AWS refuse a scenario actor's request, as things stand?

An inject's calls are made with the sandbox's own credentials (the responder's), so whatever
the responder did to the attacker's role, user or access key would not stop them. Before an
inject fires, each of its requests is decided here for the principal it stands for (its
*actor*: the identity its CloudTrail events carry), from the sandbox's IAM and KMS state read
with boto3, as AWS decides it:

- credentials first: an IAM user's access key that is Inactive (or deleted) is refused before
  any policy is read (``UnrecognizedClientException``, as KMS answers an invalid token);
- then explicit denies in the role's or user's identity policies (inline and attached, the
  user's groups included): AWS's "revoke active sessions" policy (Deny ``*`` when
  ``aws:TokenIssueTime`` is earlier than the revocation) applies to a role session issued
  before it (the session is taken as issued at the identity's first event in the scenario's
  history, or at the scenario's start), ``AWSDenyAll`` (or any Deny ``*`` on ``*``) to all;
  a role deleted leaves its sessions no permission at all;
- then an explicit Deny of the key policy naming the principal, its role or its account
  (``kmsir.keypolicy.explicit_deny``, the rule the fidelity shim enforces for real callers).

Only explicit denies are decided (an Allow missing is not, as in the shim). Identity policy
conditions on ``aws:TokenIssueTime``, ``aws:CurrentTime``, ``aws:PrincipalArn`` and
``aws:PrincipalAccount`` are evaluated (``sandbox.identity_policy``); a Deny with any other
condition is taken not to apply (the sandbox knows nothing else of the attacker's request, and
a tabletop must not make a containment look stronger than it is). An actor outside the
sandbox's account has no IAM here: only the key policy can refuse it.

``seed`` gives containment something to act on: each AssumedRole identity of the sandbox's
account gets an IAM role of its name (IAMUser identities are the scenario's ``users:``), and
AWS's ``AWSDenyAll`` managed policy exists (moto loads no AWS managed policy by default).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from kmsir import keypolicy
from kmsir.playbook.values import duration_seconds
from kmsir.sandbox import history, identity_policy
from kmsir.sandbox.scenario_model import InjectSpec

_DENY_ALL_DATA = {
    "CreateDate": "2019-05-01T22:36:14+00:00",
    "DefaultVersionId": "v2",
    "Document": {
        "Statement": [{"Action": ["*"], "Effect": "Deny", "Resource": "*", "Sid": "DenyAll"}],
        "Version": "2012-10-17",
    },
    "Path": "/",
    "UpdateDate": "2023-12-18T16:42:05+00:00",
}
_INVALID_TOKEN = "The security token included in the request is invalid."  # noqa: S105
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


class ContainmentWorld(history.World, Protocol):
    """What deciding containment needs of a seeded sandbox."""

    now: datetime

    def session(self) -> Any:
        """A boto3 session on the sandbox."""
        ...


@dataclass(frozen=True)
class Actor:
    """The principal an inject's calls stand for."""

    identity: str  # the scenario identity's name
    arn: str  # the caller, as CloudTrail's userIdentity.arn has it
    account: str
    role: str | None = None  # its role in the sandbox's account
    user: str | None = None  # its IAM user in the sandbox's account
    access_key_id: str | None = None  # the user's long-term key it signs with
    issued: datetime | None = None  # aws:TokenIssueTime of a role session

    @property
    def principal(self) -> str:
        """``aws:PrincipalArn``: a role session's role, otherwise the caller."""
        return keypolicy.principal_arn(self.arn)

    @property
    def label(self) -> str:
        """The actor in words."""
        if self.role:
            return f"role {self.role}"
        return f"user {self.user}" if self.user else self.arn


@dataclass(frozen=True)
class Denial:
    """Why AWS would refuse a request: its error, and the reason in plain words."""

    error_code: str
    error_message: str
    reason: str


def actor_of(world: ContainmentWorld, inject: InjectSpec) -> Actor | None:
    """The inject's actor: its ``identity``, or that of its first event (``None``: it has
    neither, or it is an AWS service)."""
    name = inject.identity or (inject.history[0].identity if inject.history else None)
    if name is None:
        return None
    spec = world.scenario.identities[name]
    who = history.identity(world, spec)
    if spec.type == "AWSService":
        return None
    account = str(who["accountId"])
    ours = account == world.account
    if spec.type == "AssumedRole":
        return Actor(
            name,
            str(who["arn"]),
            account,
            role=str(spec.name) if ours else None,
            issued=_first_seen(world, name),
        )
    if spec.type == "IAMUser" and ours and spec.user is not None:
        user = world.users[spec.user]
        key = str(who["accessKeyId"])  # one the sandbox created, or one of the story only
        signing = key if key in user.get("access_key_ids", []) else None
        return Actor(name, str(who["arn"]), account, user=str(user["name"]), access_key_id=signing)
    return Actor(name, str(who["arn"]), account)


def _first_seen(world: ContainmentWorld, name: str) -> datetime:
    """When the identity's session was issued: its first event in the scenario's history, or
    the scenario's start."""
    ago = [
        duration_seconds(e.at.removeprefix("-"))
        for e in world.scenario.history
        if e.identity == name
    ]
    return world.now - timedelta(seconds=max(ago, default=0))


class Containment:
    """The refusals one actor meets now; the sandbox's state is read once, when first needed."""

    def __init__(self, world: ContainmentWorld, actor: Actor, moment: datetime) -> None:
        self.world = world
        self.actor = actor
        self.moment = moment
        self._session = world.session()
        self._credentials: tuple[Denial | None] | None = None  # None: not read yet
        self._policies: list[tuple[str, dict[str, Any]]] | None = []
        self._read = False

    def denial(self, action: str, key_arn: str | None) -> Denial | None:
        """Why AWS would refuse ``action`` (``kms:...``) on the key ``key_arn`` (``None``: a
        request naming no key) to the actor, or ``None``."""
        if self._credentials is None:
            self._credentials = (self._credentials_denial(),)
        if self._credentials[0] is not None:
            return self._credentials[0]
        resource = key_arn or "*"
        policies = self._identity_policies()
        if policies is None:  # its role deleted: no policy gives the session anything
            message = (
                f"User: {self.actor.arn} is not authorized to perform: {action} on resource: "
                f"{resource} because no identity-based policy allows the {action} action"
            )
            return Denial("AccessDeniedException", message, f"{self.actor.label} was deleted")
        for name, document in policies:
            found = self._identity_deny(name, document, action, resource)
            if found is not None:
                return found
        return self._key_policy_deny(action, key_arn) if key_arn else None

    def _credentials_denial(self) -> Denial | None:
        actor = self.actor
        if actor.user is None or actor.access_key_id is None:
            return None
        iam = self._session.client("iam")
        try:
            keys = iam.list_access_keys(UserName=actor.user)["AccessKeyMetadata"]
        except iam.exceptions.NoSuchEntityException:
            keys = []
        status = next((k["Status"] for k in keys if k["AccessKeyId"] == actor.access_key_id), None)
        if status == "Active":
            return None
        state = "was deleted" if status is None else f"is {status}"
        reason = f"{actor.label}'s access key {actor.access_key_id} {state}"
        return Denial("UnrecognizedClientException", _INVALID_TOKEN, reason)

    def _identity_policies(self) -> list[tuple[str, dict[str, Any]]] | None:
        """The actor's identity policies, each named as a reason would name it (``None``:
        its role was deleted; a user deleted has no access key either, refused before)."""
        if self._read:
            return self._policies
        self._read = True
        iam = self._session.client("iam")
        try:
            if self.actor.role:
                self._policies = _policies(iam, "Role", self.actor.role)
            elif self.actor.user:
                self._policies = _policies(iam, "User", self.actor.user)
                for group in iam.list_groups_for_user(UserName=self.actor.user)["Groups"]:
                    self._policies += _policies(iam, "Group", group["GroupName"])
        except iam.exceptions.NoSuchEntityException:
            self._policies = None
        return self._policies

    def _identity_deny(
        self, name: str, document: dict[str, Any], action: str, resource: str
    ) -> Denial | None:
        context = {
            "aws:tokenissuetime": self.actor.issued,
            "aws:currenttime": self.moment,
            "aws:principalarn": self.actor.principal,
            "aws:principalaccount": self.actor.account,
        }
        for statement in keypolicy.statements(document):
            if statement.get("Effect") != "Deny" or not identity_policy.applies(
                statement, action, resource
            ):
                continue
            if not identity_policy.conditions_hold(statement.get("Condition"), context):
                continue
            revoked = identity_policy.revocation(statement)
            if revoked is not None:
                reason = f"{self.actor.label}'s sessions were revoked at {revoked} ({name})"
            else:
                reason = f"{self.actor.label} is denied {action} by {name}"
            message = (
                f"User: {self.actor.arn} is not authorized to perform: {action} on resource: "
                f"{resource} with an explicit deny in an identity-based policy"
            )
            return Denial("AccessDeniedException", message, reason)
        return None

    def _key_policy_deny(self, action: str, key_arn: str) -> Denial | None:
        from botocore.exceptions import ClientError

        kms = self._session.client("kms", region_name=key_arn.split(":")[3])
        try:
            text = kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
            policy = json.loads(text)
        except (ClientError, ValueError):  # a key gone, a policy unreadable: the call says
            return None
        if not isinstance(policy, dict):
            return None
        sid = keypolicy.explicit_deny(policy, action, caller_arn=self.actor.arn)
        if sid is None:
            return None
        message = (
            f"User: {self.actor.arn} is not authorized to perform: {action} on resource: "
            f"{key_arn} with an explicit deny in a resource-based policy ({sid})"
        )
        reason = f"the key policy denies {self.actor.principal} {action} (statement {sid})"
        return Denial("AccessDeniedException", message, reason)


def _policies(iam: Any, kind: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """The inline and attached policies of an IAM role, user or group, each with the words
    naming it in a reason."""
    field = f"{kind}Name"
    owner = f"group {name}'s " if kind == "Group" else ""
    found = []
    inline = getattr(iam, f"list_{kind.lower()}_policies")(**{field: name})["PolicyNames"]
    for policy in inline:
        got = getattr(iam, f"get_{kind.lower()}_policy")(**{field: name, "PolicyName": policy})
        found.append((f"{owner}inline policy {policy}", got["PolicyDocument"]))
    attached = getattr(iam, f"list_attached_{kind.lower()}_policies")(**{field: name})
    for policy in attached["AttachedPolicies"]:
        arn = policy["PolicyArn"]
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
        found.append((f"{owner}policy {arn}", document["Document"]))
    return [(label, _document(doc)) for label, doc in found]


def _document(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def seed(world: ContainmentWorld) -> None:
    """IAM for containment to act on: a role for each AssumedRole identity of the sandbox's
    account (trusting the account), and AWS's ``AWSDenyAll``. moto's random generator is left
    as it was, so every id seeded or made after this is what it was before roles existed."""
    from moto.iam.models import AWSManagedPolicy, iam_backends
    from moto.moto_api._internal import mock_random

    state = mock_random.getstate()
    try:
        backend = iam_backends[world.account]["aws"]
        policy = AWSManagedPolicy.from_data(
            "AWSDenyAll", world.account, backend.region_name, _DENY_ALL_DATA
        )
        backend.aws_managed_policies.append(policy)
        backend.managed_policies[policy.arn] = policy
        iam = world.session().client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{world.account}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        roles = {
            str(spec.name)
            for spec in world.scenario.identities.values()
            if spec.type == "AssumedRole"
            and (spec.account or world.account) == world.account
            and _ROLE_NAME.match(str(spec.name))
        }
        for role in sorted(roles):
            iam.create_role(
                RoleName=role,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description="kmsir sandbox: a role of the scenario's story",
            )
    finally:
        mock_random.setstate(state)
