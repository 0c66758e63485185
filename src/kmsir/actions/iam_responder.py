"""Never the responder: who runs kmsir, so that containment never cuts them off.

Containing the actor (``iam.*``, ``kms.deny-principals``) must never hit the identity the run
itself depends on: the user or role its credentials belong to (``sts:GetCallerIdentity``; an
assumed-role session stands for its role), the access key it signs with, and, when the
session's profile assumes a role, whatever it assumes that role from: the source profile's
access key and user (``role_arn`` + ``source_profile``, followed through chained profiles), or
the ``credential_source`` (environment, instance or container credentials). Deactivating the
source key would end the responder's session at its next refresh, and denying the source
user would stop it assuming the role again.

``responder(ctx)`` works this out once per call; ``Responder.refuse_*`` raise ``ActionError``
with one line naming what was refused and why. When the identity behind the session cannot be
learnt, the action fails rather than risk containing the responder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kmsir.aws import ClientFactory, aws_errors
from kmsir.errors import ActionError, KmsirError
from kmsir.keypolicy import principal_arn

if TYPE_CHECKING:
    import boto3

    from kmsir.actions.base import ActionContext

_ARN = re.compile(
    r"^arn:(aws[a-z-]*):(?:iam|sts)::(\d{12}):"
    r"(user|role|assumed-role|root|federated-user)(?:/(.+))?$"
)
_ACCOUNT = re.compile(r"^\d{12}$")
#: How many profiles a role_arn/source_profile chain may have before we stop following it.
_MAX_CHAIN = 10
_ADVICE = "contain the actor, never the caller (run kmsir with other credentials to do this)"


@dataclass(frozen=True)
class Principal:
    """An IAM identity as ``(account, kind, name)``: kind ``user``, ``role``, ``root`` (the
    whole account) or ``federated-user``; a role session is its role, a path is dropped."""

    account: str
    kind: str
    name: str

    @classmethod
    def parse(cls, value: str) -> Principal | None:
        """A principal ARN or a 12-digit account id (the account's root); ``None`` if neither."""
        value = value.strip()
        if _ACCOUNT.fullmatch(value):
            return cls(value, "root", "")
        match = _ARN.fullmatch(value)
        if match is None:
            return None
        _, account, kind, rest = match.groups()
        rest = rest or ""
        if kind == "root":
            return cls(account, "root", "")
        if kind == "assumed-role":  # assumed-role/<role>/<session>
            return cls(account, "role", rest.split("/")[0])
        return cls(account, kind, rest.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Responder:
    """What containment must leave alone: the identities and access keys behind the run's
    session, each with the reason it is protected."""

    #: ``sts:GetCallerIdentity`` of the run's credentials.
    caller_arn: str
    account: str
    partition: str
    identities: dict[Principal, str] = field(default_factory=dict)
    access_keys: dict[str, str] = field(default_factory=dict)

    def refuse_access_key(self, action: str, access_key_id: str) -> None:
        """Refuse to contain one of the access keys behind the run's session."""
        why = self.access_keys.get(access_key_id)
        if why is not None:
            raise ActionError(f"{action} refused on {access_key_id}: it is {why}; {_ADVICE}")

    def refuse_user(self, action: str, user: str) -> None:
        """Refuse to contain ``user`` (a name in this run's account) if it is behind the run."""
        self._refuse(action, f"IAM user {user}", Principal(self.account, "user", user))

    def refuse_role(self, action: str, role: str) -> None:
        """Refuse to contain ``role`` (a name in this run's account) if it is behind the run."""
        self._refuse(action, f"IAM role {role}", Principal(self.account, "role", role))

    def refuse_principal(self, action: str, principal: str) -> None:
        """Refuse a key policy principal (ARN or account id) that is, or holds, the responder:
        an account containing a protected identity is refused as a whole."""
        parsed = Principal.parse(principal)
        if parsed is None:
            return
        if parsed.kind == "root":
            for identity, why in self.identities.items():
                if identity.account == parsed.account:
                    raise ActionError(
                        f"{action} refused on {principal}: account {parsed.account} holds "
                        f"{why}; {_ADVICE}"
                    )
            return
        self._refuse(action, principal, parsed)

    def _refuse(self, action: str, what: str, target: Principal) -> None:
        why = self.identities.get(target)
        if why is not None:
            raise ActionError(f"{action} refused on {what}: it is {why}; {_ADVICE}")


def responder(ctx: ActionContext) -> Responder:
    """Who runs kmsir (see the module docstring), from the run's session and its profile."""
    clients = ctx.clients
    caller = _caller_arn(clients, "the run's credentials")
    parsed = Principal.parse(caller)
    match = _ARN.fullmatch(caller)
    if parsed is None or match is None:
        raise ActionError(f"cannot tell who this run's credentials belong to ({caller[:120]})")
    identities = {parsed: f"the identity this run's credentials belong to ({caller})"}
    access_keys: dict[str, str] = {}
    signing = caller_access_key(clients)
    if signing:
        access_keys[signing] = "the access key this run itself signs its requests with"
    try:
        _behind_the_session(clients, identities, access_keys)
    except KmsirError as exc:
        raise ActionError(
            f"cannot tell who is behind this run's session, so nothing is contained: {exc}"
        ) from None
    return Responder(caller, parsed.account, match[1], identities, access_keys)


def caller_access_key(clients: ClientFactory) -> str | None:
    """The access key id this run signs its requests with (``None`` if it cannot tell)."""
    credentials = clients.session().get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return str(frozen.access_key) if frozen.access_key else None


def _caller_arn(clients: ClientFactory, whose: str) -> str:
    with aws_errors(f"GetCallerIdentity with {whose}", service="sts"):
        return str(clients.client("sts").get_caller_identity()["Arn"])


def _behind_the_session(
    clients: ClientFactory, identities: dict[Principal, str], access_keys: dict[str, str]
) -> None:
    """Follow the session's profile when it assumes a role: record the source credentials'
    access key and identity (and every role of a chain of profiles)."""
    session = clients.session()
    credentials = session.get_credentials()
    if credentials is None or getattr(credentials, "method", None) != "assume-role":
        return  # static, environment, SSO...: the caller and its key are all there is
    import botocore.session

    with aws_errors("reading the AWS config files", service="sts"):
        config_files = botocore.session.Session(profile=session.profile_name).full_config
    profiles: dict[str, dict[str, Any]] = config_files.get("profiles", {})
    name = session.profile_name
    seen: set[str] = set()
    while name not in seen and len(seen) < _MAX_CHAIN:
        seen.add(name)
        config = profiles.get(name, {})
        how = f"profile {name} assumes {config.get('role_arn', 'its role')}"
        source = config.get("source_profile")
        if source is not None:
            found = profiles.get(source, {})
            if "aws_access_key_id" in found:
                key = str(found["aws_access_key_id"])
                access_keys[key] = f"the access key from which {how} (profile {source})"
                _source_identity(
                    clients, identities, f"profile {source}'s access key", how, _static(found)
                )
                return
            if "role_arn" in found:  # a chain: the source profile itself assumes a role
                role = Principal.parse(str(found["role_arn"]))
                if role is not None:
                    identities[role] = f"the role from which {how}"
                name = str(source)
                continue
            _source_identity(
                clients, identities, f"profile {source}", how, _profile(source), access_keys
            )
            return
        if "credential_source" in config:
            sourced = str(config["credential_source"])
            _source_identity(clients, identities, sourced, how, _sourced(sourced), access_keys)
        return


def _source_identity(
    clients: ClientFactory,
    identities: dict[Principal, str],
    whose: str,
    how: str,
    session_factory: Callable[[], boto3.Session],
    access_keys: dict[str, str] | None = None,
) -> None:
    """Learn who the source credentials belong to (and their access key, if asked)."""
    source = ClientFactory(
        session_factory=session_factory,
        region=clients.resolved_region,
        endpoint_url=clients.endpoint_url,
        check_mode=clients.check_mode,
        guard_send=clients.guard_send,
        recorder=clients.recorder,
    )
    with aws_errors(f"the credentials of {whose}", service="sts"):
        key = caller_access_key(source)
    if key and access_keys is not None:
        access_keys[key] = f"the access key from which {how} ({whose})"
    arn = _caller_arn(source, f"{whose}'s credentials")
    parsed = Principal.parse(principal_arn(arn))
    if parsed is not None:
        identities[parsed] = f"the identity from which {how} ({arn})"


def _static(profile: dict[str, Any]) -> Callable[[], boto3.Session]:
    def session() -> boto3.Session:
        import boto3

        return boto3.Session(
            aws_access_key_id=str(profile["aws_access_key_id"]),
            aws_secret_access_key=str(profile.get("aws_secret_access_key", "")),
            aws_session_token=profile.get("aws_session_token"),
        )

    return session


def _profile(name: str) -> Callable[[], boto3.Session]:
    def session() -> boto3.Session:
        import boto3

        return boto3.Session(profile_name=name)

    return session


def _sourced(credential_source: str) -> Callable[[], boto3.Session]:
    """The credentials a ``credential_source`` names, as botocore itself finds them."""

    def session() -> boto3.Session:
        import boto3
        from botocore.credentials import (
            CanonicalNameCredentialSourcer,
            ContainerProvider,
            EnvProvider,
            InstanceMetadataFetcher,
            InstanceMetadataProvider,
        )

        sourcer = CanonicalNameCredentialSourcer(
            [
                EnvProvider(os.environ),
                ContainerProvider(),
                InstanceMetadataProvider(iam_role_fetcher=InstanceMetadataFetcher()),
            ]
        )
        found = sourcer.source_credentials(credential_source)
        if found is None:
            raise ActionError(f"credential_source {credential_source} gave no credentials")
        frozen = found.get_frozen_credentials()
        return boto3.Session(
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token,
        )

    return session
