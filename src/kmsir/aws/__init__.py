"""The one place AWS clients are made: retry config, pacing, check-mode guard, call journal,
errors.

botocore's standard retries, configured here once, are the one retry layer for throttling and
transient errors; nothing above retries them again. A quota kmsir knows is kept by pacing every
request of that operation (``pacing``), so no caller paces by hand. Clients are typed
(``ClientFactory.client("kms")`` is a ``KMSClient`` to mypy).

Nothing here runs at import time and boto3 is imported lazily, so ``kmsir --help`` and
``kmsir validate`` stay fast. Tests and the sandbox pass in their own session factory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from kmsir import __version__
from kmsir.aws.pacing import pace
from kmsir.errors import AwsError, CheckModeRefusal, UsageError
from kmsir.evidence.calls import Call, is_read_only

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_athena import AthenaClient
    from mypy_boto3_cloudtrail import CloudTrailClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

#: Attempts botocore makes at one call (the first and its retries), with standard-mode backoff.
MAX_ATTEMPTS = 5
#: HTTP connections per client: enough for the concurrent snapshot of many keys.
MAX_POOL_CONNECTIONS = 32

#: Operations that must not be sent again blindly: a second one that reaches AWS changes state
#: again (a second on-demand rotation). After an attempt whose response was lost, botocore does
#: not retry them; the action reads AWS's state to learn whether the first one took effect.
NOT_IDEMPOTENT = frozenset({"RotateKeyOnDemand"})
#: ``AwsError`` codes of a call whose request may have been carried out although no response
#: came back (read timeout, connection closed while waiting for the answer).
RESPONSE_LOST = frozenset({"ReadTimeoutError", "ConnectionClosedError"})
#: Error codes of expired temporary credentials: the run can go on with fresh ones.
EXPIRED_CREDENTIALS = frozenset({"ExpiredToken", "ExpiredTokenException"})


CallRecorder = Callable[[Call], None]
SessionFactory = Callable[[], "boto3.Session"]


def client_config() -> Any:
    """The botocore configuration of every client kmsir makes: bounded retries, timeouts, a
    pool for the worker threads, and ``kmsir/VERSION`` in the user agent (CloudTrail logs it)."""
    from botocore.config import Config

    return Config(
        # botocore reads "max_attempts" as retries after the first attempt (6 in all):
        # "total_max_attempts" is the number of attempts, first one included.
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        user_agent_extra=f"kmsir/{__version__}",
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )


class CallNumbers:
    """The numbers of a run's changing calls (the journal pairs each intent with its answer
    by it): one after another, whatever the thread, and whichever ``Fleet`` account's factory
    took it (they share one)."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def take(self) -> int:
        """The next number."""
        with self._lock:
            return next(self._next)


@dataclass
class ClientFactory:
    """Makes boto3 clients with kmsir's retry config, pacing, guards and call recording.

    ``check_mode`` refuses every non-read-only operation before it is sent.
    ``guard_send`` (the sandbox sets it) refuses any request that the in-process moto did not
    answer, before it is sent (``refuse_unanswered``): nothing can leak to a real account.
    ``intent_recorder`` hears of every state-changing call just before it is sent, so a crash
    between sending and journaling the result still leaves the call in the journal.
    """

    session_factory: SessionFactory
    region: str | None = None
    endpoint_url: str | None = None
    check_mode: bool = False
    guard_send: bool = False
    recorder: CallRecorder | None = None
    intent_recorder: CallRecorder | None = None
    #: The account these clients reach, when it is not the one the run signs in to (a
    #: ``Fleet``'s other accounts): named on every call recorded.
    account: str | None = None
    _calls: CallNumbers = field(default_factory=lambda: CallNumbers(), init=False)
    _session: Any = field(default=None, init=False, repr=False)
    _clients: dict[tuple[str, str | None], Any] = field(
        default_factory=dict, init=False, repr=False
    )
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    @classmethod
    def live(cls, profile: str | None, region: str | None) -> ClientFactory:
        """Clients for AWS (or the endpoint the environment points AWS clients at), with the
        credentials of ``profile`` (the default chain when None)."""

        def session() -> boto3.Session:
            import boto3
            from botocore.exceptions import ProfileNotFound

            try:
                return boto3.Session(profile_name=profile, region_name=region)
            except ProfileNotFound:
                raise UsageError(f"--profile {profile}: no such AWS profile") from None

        return cls(session_factory=session, region=region)

    def session(self) -> boto3.Session:
        """The (lazily created) boto3 session."""
        with self._lock:
            if self._session is None:
                self._session = self.session_factory()
            return self._session  # type: ignore[no-any-return]

    @overload
    def client(self, service: Literal["athena"], region: str | None = None) -> AthenaClient: ...
    @overload
    def client(
        self, service: Literal["cloudtrail"], region: str | None = None
    ) -> CloudTrailClient: ...
    @overload
    def client(self, service: Literal["ec2"], region: str | None = None) -> EC2Client: ...
    @overload
    def client(self, service: Literal["iam"], region: str | None = None) -> IAMClient: ...
    @overload
    def client(self, service: Literal["kms"], region: str | None = None) -> KMSClient: ...
    @overload
    def client(
        self, service: Literal["organizations"], region: str | None = None
    ) -> OrganizationsClient: ...
    @overload
    def client(self, service: Literal["s3"], region: str | None = None) -> S3Client: ...
    @overload
    def client(self, service: Literal["sts"], region: str | None = None) -> STSClient: ...

    def client(self, service: str, region: str | None = None) -> Any:
        """A cached client for ``service`` in ``region`` (default: the factory's Region),
        typed by the service's boto3-stubs class (a service kmsir does not use is a type
        error: add its overload and its boto3-stubs extra)."""
        region = region or self.resolved_region
        key = (service, region)
        session = self.session()
        # A boto3 session is not thread-safe, its clients are: create them one at a time.
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None:
                return cached
            client = session.client(
                service,  # type: ignore[call-overload]
                region_name=region,
                endpoint_url=self.endpoint_url,
                config=client_config(),
            )
            self._install_hooks(client)
            self._clients[key] = client
            return client

    @property
    def resolved_region(self) -> str:
        """The Region clients use (from the argument, profile or environment)."""
        region = self.region or self.session().region_name or os.environ.get("AWS_REGION")
        if not region:
            raise UsageError("no AWS Region: pass --region or set AWS_DEFAULT_REGION")
        return str(region)

    def _install_hooks(self, client: Any) -> None:
        events = client.meta.events
        service = client.meta.service_model.service_name
        service_id = client.meta.service_model.service_id.hyphenize()
        region = client.meta.region_name

        def keep_params(
            params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
        ) -> None:
            # what the journal records of the request: never a secret it carries
            context["kmsir_params"] = redacted(params, model.input_shape)

        def check_mode_guard(model: Any, **_: Any) -> None:
            if self.check_mode and not is_read_only(model.name):
                raise CheckModeRefusal(
                    f"check mode: refused to send {service}:{model.name} (it changes state)"
                )

        def call(model: Any, context: dict[str, Any], **result: Any) -> Call:
            return Call(
                service=service,
                operation=model.name,
                region=region,
                params=context.get("kmsir_params", {}),
                call=context.get("kmsir_call"),
                account=self.account,
                **result,
            )

        def intent(model: Any, context: dict[str, Any], **_: Any) -> None:
            if is_read_only(model.name):
                return
            context["kmsir_call"] = self._calls.take()
            if self.intent_recorder is not None:
                self.intent_recorder(call(model, context))

        def record(
            http_response: Any,
            parsed: dict[str, Any],
            model: Any,
            context: dict[str, Any],
            **_: Any,
        ) -> None:
            if self.recorder is None:
                return
            meta = parsed.get("ResponseMetadata", {}) if isinstance(parsed, dict) else {}
            error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
            self.recorder(
                call(
                    model,
                    context,
                    http_status=getattr(http_response, "status_code", None),
                    request_id=meta.get("RequestId"),
                    error_code=error.get("Code"),
                )
            )

        def before_retry(
            operation: Any,
            response: Any = None,
            caught_exception: Exception | None = None,
            **_: Any,
        ) -> bool | None:
            # an attempt whose response was lost, or that AWS answered with a server error,
            # may have been carried out: said to the action if the call ends refused
            status = getattr(response[0], "status_code", 0) if response else 0
            lost = _response_lost(caught_exception)
            if lost or status >= 500:
                _attempts.maybe_done = True
            # False stops botocore's retry (its own handler, registered after this one, would
            # answer with a delay); None leaves the decision to it.
            return False if lost and operation.name in NOT_IDEMPOTENT else None

        events.register("provide-client-params", keep_params)
        events.register_first(f"needs-retry.{service_id}", before_retry)
        events.register("before-call", check_mode_guard)
        events.register("before-call", intent)
        events.register("after-call", record)
        pace(client)
        if self.guard_send:
            refuse_unanswered(events)


def _response_lost(exc: Exception | None) -> bool:
    """True for a failed attempt that may have reached AWS and been carried out."""
    from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

    return isinstance(exc, ConnectionClosedError | ReadTimeoutError)


def redacted(value: Any, shape: Any) -> Any:
    """``value`` (request parameters, or a response kept as an artifact) as evidence may keep
    it: every member botocore's model marks sensitive (a Plaintext, a secret key) replaced by
    its size, at any depth."""
    if shape is None:
        return value
    if shape.metadata.get("sensitive"):
        size = len(value) if isinstance(value, str | bytes | bytearray) else None
        return "<sensitive>" if size is None else f"<sensitive, {size} bytes>"
    if shape.type_name == "structure" and isinstance(value, dict):
        return {k: redacted(v, shape.members.get(k)) for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [redacted(v, shape.member) for v in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: redacted(v, shape.value) for k, v in value.items()}
    return value


def refuse_unanswered(events: Any) -> None:
    """Make the clients of ``events`` (a session's or one client's event hooks) refuse every
    request no ``before-send`` handler answered: the sandbox's guard, nothing goes on the wire.

    moto answers in ``before-send``. botocore calls every handler of that event and uses the
    first answer one gave; only when none did does it send the request itself. The handler
    registered here, last, answers every request with a ``_Refusal``: the answer botocore uses
    only when no handler before it answered, and which refuses the call when botocore reads it.
    """
    events.register_last("before-send", _refuse, unique_id="kmsir-refuse-unanswered")


def _refuse(request: Any, **_: Any) -> _Refusal:
    return _Refusal(str(request.url))


class _Refusal:
    """The answer of last resort to a request (see ``refuse_unanswered``): not a response,
    any use of it raises the refusal."""

    def __init__(self, url: str) -> None:
        self._url = url

    def __getattr__(self, name: str) -> Any:
        raise AwsError(
            f"sandbox: refused to send a request to {self._url} (not answered by the "
            "sandbox; nothing may reach a real AWS account)",
            code="SandboxRefused",
            operation="send",
        )


#: Per thread (a client's calls in one thread follow one another): whether an attempt of
#: the call in progress may have been carried out without kmsir hearing so.
_attempts = threading.local()


@dataclass
class Sent:
    """What ``aws_errors`` learnt of the call in its block, for an action that handles the
    error itself."""

    #: An earlier attempt of the call may have been carried out: its response was lost, or
    #: AWS answered it with a server error, and botocore tried again. A refusal of the retry
    #: may then mean "already done by this run" (not by someone else).
    retried: bool = False


@contextlib.contextmanager
def aws_errors(what: str, *, service: str = "kms") -> Iterator[Sent]:
    """Translate botocore errors raised inside the block into one-line ``AwsError``s.

    ``what`` names the operation and resource (``DisableKey on key 1234...``). An
    AccessDenied names the IAM action that was missing; expired credentials say how to go on.
    """
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )

    sent = Sent()
    _attempts.maybe_done = False
    try:
        yield sent
    except ClientError as exc:
        sent.retried = bool(getattr(_attempts, "maybe_done", False))
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")).strip().splitlines()[0:1]
        operation = exc.operation_name
        detail = f"{what}: AWS {code}"
        if message:
            detail += f": {message[0][:300]}"
        if code in EXPIRED_CREDENTIALS:
            detail += (
                " (the AWS credentials expired: refresh them, then continue the run with "
                "kmsir resume)"
            )
        elif code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            if "explicit deny" in detail.lower():
                detail += " (an explicit Deny applies to you: see the key policy)"
            else:
                detail += f" (missing IAM permission {service}:{operation}?)"
        raise AwsError(detail, code=code, operation=operation) from None
    except NoRegionError:
        raise UsageError("no AWS Region: pass --region or set AWS_DEFAULT_REGION") from None
    except NoCredentialsError:
        raise UsageError(
            "no AWS credentials found: set AWS_PROFILE or use --profile "
            "(or try it with --sandbox, which needs no account)"
        ) from None
    except ParamValidationError as exc:
        # botocore's message quotes the values, which may be secrets: name the parameters
        names = sorted(set(re.findall(r"parameter ([\w.\[\]]+)", str(exc)))) or ["?"]
        raise AwsError(
            f"{what}: refused before sending: invalid parameter {', '.join(names)}",
            code="ParamValidationError",
            operation="",
        ) from None
    except BotoCoreError as exc:
        raise AwsError(f"{what}: {exc}", code=type(exc).__name__, operation="") from None
