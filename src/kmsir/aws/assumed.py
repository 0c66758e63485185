"""Clients in another account: STS AssumeRole with the caller's credentials, refreshed by
botocore before they expire (``AssumeRoleCredentialFetcher`` and
``DeferredRefreshableCredentials``, not by hand). ``targets.Fleet`` uses it for every account of
a run's scope but the caller's own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kmsir.aws import CallRecorder, ClientFactory, SessionFactory, aws_errors
from kmsir.errors import AwsError, UsageError

if TYPE_CHECKING:
    import boto3

#: A clock (timezone-aware UTC), as botocore's credentials read it.
Now = Callable[[], datetime]

#: AssumeRole answers that will not change by asking again in this run: the role's trust
#: policy, the caller's permissions or credentials, a bad ARN, STS disabled in the Region.
#: Any other failure (throttling, a network error, a server error) is tried again at the
#: account's next client.
REFUSALS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "RegionDisabledException",
        "ValidationError",
        "MalformedPolicyDocument",
        "PackedPolicyTooLarge",
    }
)


def assumed_session(
    base: ClientFactory,
    *,
    role_arn: str,
    session_name: str,
    external_id: str | None,
    what: str,
    now: Now | None = None,
) -> SessionFactory:
    """How an account's session is made: AssumeRole of ``role_arn`` with ``base``'s
    credentials, through a factory of its own (``StsSource``: never in check mode, since
    AssumeRole changes nothing in the account; journaled by the base's recorder), made at the
    first call; its credentials refreshed by botocore (by ``now``, botocore's clock by
    default). The session keeps the base session's profile configuration (its endpoint, CA
    bundle, FIPS and dual-stack settings). A refusal is an ``AwsError`` starting with
    ``what`` (it names the account and the role); a definite one (``REFUSALS``) is
    remembered, asked again only by another run or a resume; any other failure is tried
    again at the account's next client."""
    region = base.resolved_region
    extra = {"RoleSessionName": session_name}
    if external_id is not None:
        extra["ExternalId"] = external_id
    source = StsSource(base, region)
    refused: list[AwsError] = []

    def session() -> boto3.Session:
        if refused:
            raise AwsError(str(refused[0]), code=refused[0].code, operation="AssumeRole")
        try:
            credentials = _assumed_credentials(source, role_arn, extra, what, now)
        except AwsError as exc:
            if exc.code in REFUSALS:
                refused.append(exc)
            raise
        return _session_with(credentials, region, like=base.session())

    return session


class AccountClients(ClientFactory):
    """The clients of one account of a ``Fleet`` reached through AssumeRole: its own session
    (the assumed role's credentials), the base factory's check mode and recorders."""

    def __init__(self, base: ClientFactory, session_factory: SessionFactory, account: str):
        self._base = base
        super().__init__(
            session_factory=session_factory,
            region=base.region,
            endpoint_url=base.endpoint_url,
            check_mode=base.check_mode,
            guard_send=base.guard_send,
            recorder=base.recorder,
            intent_recorder=base.intent_recorder,
            account=account,
        )
        # one numbering of changing calls for the whole run: the journal pairs each intent
        # with its answer by this number, whichever account the call went to
        self._calls = base._calls

    # The run sets these on the base factory at its start: the fleet's accounts follow it.
    @property
    def check_mode(self) -> bool:
        return self._base.check_mode

    @check_mode.setter
    def check_mode(self, value: bool) -> None:
        self._base.check_mode = value

    @property
    def recorder(self) -> CallRecorder | None:
        return self._base.recorder

    @recorder.setter
    def recorder(self, value: CallRecorder | None) -> None:
        self._base.recorder = value

    @property
    def intent_recorder(self) -> CallRecorder | None:
        return self._base.intent_recorder

    @intent_recorder.setter
    def intent_recorder(self, value: CallRecorder | None) -> None:
        self._base.intent_recorder = value


class StsSource(ClientFactory):
    """The clients that assume a fleet's roles: the base factory's session (its profile,
    endpoint and credentials), the base's recorder (the journal shows each AssumeRole: role
    ARN, session name, answer; never the credentials, which only the response carries), its
    numbering of calls; never in check mode and never an intent (AssumeRole changes nothing)."""

    def __init__(self, base: ClientFactory, region: str):
        self._base = base
        super().__init__(
            session_factory=base.session_factory,
            region=region,
            endpoint_url=base.endpoint_url,
            guard_send=base.guard_send,
        )
        self._calls = base._calls

    @property
    def recorder(self) -> CallRecorder | None:
        return self._base.recorder

    @recorder.setter
    def recorder(self, value: CallRecorder | None) -> None:
        return None


class _NoCache(dict[str, Any]):
    """The fetcher's cache, always empty: ``DeferredRefreshableCredentials`` alone decides
    when to assume the role again (by its clock)."""

    def __setitem__(self, key: str, value: Any) -> None:
        return None


def _assumed_credentials(
    source: ClientFactory, role_arn: str, extra: dict[str, str], what: str, now: Now | None
) -> Any:
    """Refreshable credentials of ``role_arn``, fetched once now (so that a refusal is said
    here, naming the account and the role, not in the middle of some later call)."""
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

    with aws_errors(what, service="sts"):
        caller = source.session().get_credentials()
        if caller is None:
            raise UsageError(
                "no AWS credentials found: set AWS_PROFILE or use --profile "
                "(or try it with --sandbox, which needs no account)"
            )
        fetcher = AssumeRoleCredentialFetcher(
            # the source factory's STS client: its retries, pacing and sandbox guard
            client_creator=lambda *_, **__: source.client("sts"),
            source_credentials=caller,
            role_arn=role_arn,
            extra_args=extra,
            cache=_NoCache(),
        )
        clock = {"time_fetcher": now} if now is not None else {}
        credentials = DeferredRefreshableCredentials(
            fetcher.fetch_credentials, "assume-role", **clock
        )
        credentials.get_frozen_credentials()
    return credentials


def _session_with(credentials: Any, region: str, *, like: boto3.Session) -> boto3.Session:
    """A boto3 session whose credentials are ``credentials`` (through botocore's public
    credential provider component), with the profile of ``like`` (the base session): its
    configuration (``endpoint_url``, ``ca_bundle``, ``use_fips_endpoint``,
    ``use_dualstack_endpoint``, retries) applies to the assumed role's clients too."""
    import boto3
    import botocore.session
    from botocore.credentials import CredentialProvider, CredentialResolver

    class Assumed(CredentialProvider):
        METHOD = "assume-role"
        CANONICAL_NAME = "kmsir-assume-role"

        def load(self) -> Any:
            return credentials

    original = like._session
    core = botocore.session.Session(profile=original.profile)
    # the service models and endpoints, read once (the sandbox shares one loader)
    core.register_component("data_loader", original.get_component("data_loader"))
    core.register_component("credential_provider", CredentialResolver([Assumed()]))
    return boto3.Session(botocore_session=core, region_name=region)
