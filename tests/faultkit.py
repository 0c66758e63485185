"""A fault layer for botocore in front of moto, and the moto world the fault tests run in.

``FaultLayer`` stands on a boto3 session's ``before-send`` event (where botocore hands each
attempt to the wire) instead of moto's own handler: it answers the attempts a ``Rule`` strikes
with what AWS or the network would (an error in the service's own format, a load balancer's
503, a reset connection, a timeout, a timeout after AWS carried the request out) and hands the
rest to moto. It sees every attempt, so tests count them.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from kmsir.evidence.calls import is_read_only

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ROGUE = "arn:aws:iam::444455556666:role/rogue"

#: The service of each operation the actions call that is not KMS's.
NOT_KMS = {
    "GetCallerIdentity": "sts",
    "LookupEvents": "cloudtrail",
    "ListAccessKeys": "iam",
    "GetAccessKeyLastUsed": "iam",
    "UpdateAccessKey": "iam",
}


def service_of(operation: str) -> str:
    """The service (botocore's service id) an operation belongs to."""
    return NOT_KMS.get(operation, "kms")


# -- the fault layer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Which attempts get ``fault``: of ``operation`` (any when ``None``), from call number
    ``call`` on (each call when ``None``); ``times`` attempts of each such call, or every
    attempt while the rule is in place (``None``)."""

    fault: str
    operation: str | None = None
    call: int | None = None
    times: int | None = None
    #: Calls (``Operation#n``) spared.
    spare: frozenset[str] = frozenset()

    def strikes(self, operation: str, call: int, attempt: int) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if f"{operation}#{call}" in self.spare:
            return False
        if self.times is None:
            return self.call is None or call >= self.call
        return (self.call is None or call == self.call) and attempt <= self.times


@dataclass(frozen=True)
class Attempt:
    """One attempt the layer saw: which call, and what answered it."""

    operation: str
    call: int
    attempt: int
    fault: str | None
    #: The HTTP status moto answered with, when the attempt reached it.
    status: int | None


@dataclass
class FaultLayer:
    """Stands in front of moto on a session's ``before-send``: answers the attempts a rule
    strikes with the fault, hands the rest to moto. Sees every attempt, so it counts them.

    It replaces moto's handler rather than running before it: ``before-send`` calls every
    handler even after one has answered, so moto would carry out a request the fault layer
    had already answered with an error.
    """

    rules: list[Rule] = field(default_factory=list)
    armed: bool = False
    #: Called with each fault as it is injected: what someone else does meanwhile.
    meanwhile: Callable[[str], None] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    _calls: dict[str, int] = field(default_factory=dict)
    _per_operation: Counter[str] = field(default_factory=Counter)

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        from moto.core.models import botocore_stubber

        if not self.armed:
            return botocore_stubber(event_name=event_name, request=request)
        _, service, operation = event_name.split(".", 2)
        invocation = _header(request, "amz-sdk-invocation-id")
        if invocation not in self._calls:
            self._per_operation[operation] += 1
            self._calls[invocation] = self._per_operation[operation]
        call = self._calls[invocation]
        number = re.search(r"attempt=(\d+)", _header(request, "amz-sdk-request"))
        attempt = int(number[1]) if number else 1
        fault = next((r.fault for r in self.rules if r.strikes(operation, call, attempt)), None)
        status = None
        try:
            if fault is None or fault == "lost":
                response = botocore_stubber(event_name=event_name, request=request)
                status = response.status_code if response is not None else None
                if fault is None:
                    return response
            self.injected[fault] += 1
            if self.meanwhile is not None:
                self.meanwhile(fault)
            return _fault(fault, service, operation, request)
        finally:
            self.attempts.append(Attempt(operation, call, attempt, fault, status))

    def reset(self) -> None:
        """Forget everything: no rules, nothing seen, disarmed."""
        self.rules, self.armed, self.meanwhile = [], False, None
        self.attempts, self.injected = [], Counter()
        self._calls, self._per_operation = {}, Counter()

    def of(self, operation: str, *, since_call: int = 1) -> list[Attempt]:
        """The attempts at ``operation`` from call number ``since_call`` on."""
        return [a for a in self.attempts if a.operation == operation and a.call >= since_call]

    def carried_out(self) -> Counter[str]:
        """State-changing operations moto carried out (answered 2xx), by name."""
        return Counter(
            a.operation
            for a in self.attempts
            if not is_read_only(a.operation) and a.status is not None and 200 <= a.status < 300
        )


def _header(request: Any, name: str) -> str:
    value = request.headers.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)


class _Body:
    """The raw body of a made-up HTTP response (what ``AWSResponse`` reads)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


#: (HTTP status, error code by protocol, message) of the faults that are AWS answers.
_ANSWERS: dict[str, tuple[int, dict[str, str], str]] = {
    "throttle": (400, {"json": "ThrottlingException", "query": "Throttling"}, "Rate exceeded"),
    "http-500": (
        500,
        {"kms": "KMSInternalException", "json": "InternalFailure", "query": "ServiceFailure"},
        "We encountered an internal error. Please try again.",
    ),
    "access-denied": (
        400,
        {"json": "AccessDeniedException", "query": "AccessDenied"},
        "User: arn:aws:sts::123456789012:assumed-role/responder/alice is not authorized to "
        "perform: {permission} because no identity-based policy allows the {permission} action",
    ),
    "invalid-state": (
        400,
        {"json": "KMSInvalidStateException"},
        "arn:aws:kms:eu-west-1:123456789012:key/abc is pending deletion.",
    ),
    "expired-token": (
        400,
        {"json": "ExpiredTokenException", "query": "ExpiredToken"},
        "The security token included in the request is expired",
    ),
}
_PROTOCOL = {"kms": "json", "cloudtrail": "json", "iam": "query", "sts": "query"}
#: A load balancer's 503: HTML, not the service's format.
_HTML_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
)


def code_of(fault: str, service: str) -> str | None:
    """The AWS error code a fault answers with (``None``: no answer reaches botocore)."""
    if fault == "http-503":
        return "503"
    answer = _ANSWERS.get(fault)
    if answer is None:
        return None
    codes = answer[1]
    return codes.get(service) or codes[_PROTOCOL[service]]


def _fault(fault: str, service: str, operation: str, request: Any) -> Any:
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if fault == "reset":
        raise ConnectionClosedError(endpoint_url=request.url)
    if fault == "unreachable":
        raise EndpointConnectionError(endpoint_url=request.url)
    if fault in ("timeout", "lost"):
        raise ReadTimeoutError(endpoint_url=request.url)
    request_id = str(uuid.uuid4())
    if fault == "http-503":
        headers = {"Content-Type": "text/html", "x-amzn-RequestId": request_id}
        return AWSResponse(request.url, 503, headers, _Body(_HTML_503))
    status, _, message = _ANSWERS[fault]
    code = code_of(fault, service)
    message = message.format(permission=f"{service}:{operation}")
    if _PROTOCOL[service] == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}
    else:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(request.url, status, headers, _Body(body))


# -- the world -----------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What one case's action works on: a fresh key with a grant, an IAM user's access key,
    a CloudTrail event naming the key."""

    key_id: str
    key_arn: str
    grant_id: str
    user: str
    access_key_id: str


class SleepRecorder:
    """botocore's ``time`` module as the endpoint sees it: its backoff sleeps are recorded,
    not slept (everything else is the real module)."""

    def __init__(self, real: ModuleType) -> None:
        self.real = real
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Moto:
    """One moto account for the module: the faulty session kmsir's clients come from, and
    an admin session (no faults) that seeds worlds and checks the outcome."""

    session: Any
    admin: Any
    #: Where the cases' playbooks and bundles go.
    root: Path
    layer: FaultLayer = field(default_factory=FaultLayer)
    worlds: int = 0
    runs: int = 0
    _admin_clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """An admin client (no faults), made once."""
        if service not in self._admin_clients:
            self._admin_clients[service] = self.admin.client(service)
        return self._admin_clients[service]

    def workdir(self) -> Path:
        """A fresh folder for one run's playbook and evidence."""
        self.runs += 1
        path = self.root / str(self.runs)
        path.mkdir()
        return path

    def world(self, action: str) -> World:
        """A fresh world for ``action``, in the state it changes (a key to enable is
        disabled...). Only IAM actions get a user, only CloudTrail ones an event: moto and
        the event history search every one of them on each request."""
        from kmsir.sandbox import lookup

        self.worlds += 1
        kms, iam = self.client("kms"), self.client("iam")
        key = kms.create_key(Description=f"fault case {self.worlds}")["KeyMetadata"]
        grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=ROGUE, Operations=["Decrypt"])
        user = access_key = ""
        if action.startswith("iam."):
            user = f"svc-{self.worlds}"
            iam.create_user(UserName=user)
            access_key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
        if action.startswith("cloudtrail."):
            when = datetime.now(timezone.utc) - timedelta(hours=1)
            event = {
                "eventVersion": "1.08",
                "eventID": str(uuid.uuid4()),
                "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": "kms.amazonaws.com",
                "eventName": "Decrypt",
                "awsRegion": REGION,
                "readOnly": True,
                "userIdentity": {"type": "AssumedRole", "arn": ROGUE, "accountId": "444455556666"},
                "resources": [{"ARN": key["Arn"], "type": "AWS::KMS::Key", "accountId": ACCOUNT}],
            }
            lookup.add_events(ACCOUNT, REGION, [event])
        if action == "kms.enable-key":
            kms.disable_key(KeyId=key["KeyId"])
        elif action == "kms.cancel-deletion":
            kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
        elif action == "iam.reactivate-access-key":
            iam.update_access_key(UserName=user, AccessKeyId=access_key, Status="Inactive")
        return World(key["KeyId"], key["Arn"], grant["GrantId"], user, access_key)


@contextlib.contextmanager
def faulty_moto(root: Path) -> Iterator[Moto]:
    """moto with the fault layer in front of it on one session (kmsir's clients come from it)
    and an admin session without faults; run's folders go under ``root``."""
    import boto3
    import pytest
    from moto import mock_aws
    from moto.core.models import botocore_stubber
    from moto.kms import models as moto_kms

    from kmsir.sandbox import lookup, shim

    def session() -> Any:
        # explicit dummy credentials: nothing is looked up from the environment or profiles
        return boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name=REGION,
        )

    # Speed only: moto makes a 2048-bit RSA key for every key, symmetric ones too, which
    # never use it (60 ms each): they share one.
    shared = moto_kms.generate_private_key("RSA_2048")
    with mock_aws(), pytest.MonkeyPatch.context() as patch:
        original = moto_kms.generate_private_key
        patch.setattr(
            moto_kms,
            "generate_private_key",
            lambda spec: shared if spec == "SYMMETRIC_DEFAULT" else original(spec),
        )
        lookup.install()
        shim.install()  # AWS's key-state rules, so a re-sent change is answered as AWS would
        faulty = session()
        layer = FaultLayer()
        faulty.events.unregister("before-send", botocore_stubber)
        faulty.events.register_first("before-send", layer)
        yield Moto(faulty, session(), root, layer)
