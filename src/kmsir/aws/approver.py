"""A second person's identity, proven by STS: the approver signs, the run sends.

``sign`` (the approver's side: ``kmsir approve``) signs an ``sts:GetCallerIdentity`` request
with the approver's own credentials, for the run's STS endpoint, carrying the approval's
binding in a signed ``X-Kmsir-Approval`` header, and sends nothing. ``identify`` (the run's
side) checks the signed request is that call and nothing else, sends it to STS exactly as it
was signed and returns the identity STS answers with. Nobody types a name: STS says whose
credentials signed, and a header changed after signing makes STS refuse the signature
(`SigV4 <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html>`_; a signature
older than 15 minutes is refused too).

The request goes through a boto3 STS client that does not sign (``botocore.UNSIGNED``), made
from the run's session, with a ``before-send`` hook that puts the approver's URL, signed
headers and body on the request: the in-process sandbox (moto answers in ``before-send``) and
AWS take the same path. moto checks no signature: in the sandbox the identity comes from the
access key id in the ``Authorization`` header alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kmsir.aws import ClientFactory, aws_errors, client_config, refuse_unanswered
from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.approvals import HEADER as BINDING_HEADER
from kmsir.evidence.approvals import MAX_HEADER as MAX_HEADER

if TYPE_CHECKING:
    import boto3

#: The one request an approver signs.
METHOD = "POST"
BODY = "Action=GetCallerIdentity&Version=2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
#: The headers a signed approval carries, and the ones it must carry (lower case).
ALLOWED_HEADERS = frozenset(
    {
        "content-type",
        "x-amz-date",
        "x-amz-security-token",
        "authorization",
        BINDING_HEADER.lower(),
    }
)
REQUIRED_HEADERS = frozenset({"authorization", "x-amz-date", BINDING_HEADER.lower()})
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=[A-Za-z0-9]{16,128}/\d{8}/[a-z0-9-]+/sts/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$"
)
_BINDING = re.compile(r"^[0-9a-f]{64}$")
#: SigV4's request time (``X-Amz-Date``): when the approver signed.
AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
#: The roles IAM Identity Center makes for a permission set: a session's name is the person's
#: sign-in name, set by Identity Center (not chosen by whoever assumes the role).
SSO_ROLE_PREFIX = "AWSReservedSSO_"
_SESSION = re.compile(r"^arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/(.+)$")
_FEDERATED = re.compile(r"^arn:[^:]+:sts::\d{12}:federated-user/")


class SignedRequestRefused(KmsirError):
    """A signed approval request kmsir does not send, or that STS refused: one line why."""


@dataclass(frozen=True)
class Identity:
    """Who signed, as STS answered ``GetCallerIdentity``."""

    arn: str
    account: str
    user_id: str
    #: STS's request id of the answer: the call is in the approver's account's CloudTrail.
    request_id: str | None


def sign(session: boto3.Session, url: str, region: str, binding: str) -> dict[str, Any]:
    """The ``sts:GetCallerIdentity`` request for ``url`` in ``region``, SigV4-signed with the
    credentials of ``session`` (its session token included), ``binding`` in the signed
    ``X-Kmsir-Approval`` header. Nothing is sent: returns ``{"method", "url", "headers",
    "body"}``, all strings, for the answer file."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.exceptions import BotoCoreError

    if not _BINDING.match(binding):
        raise UsageError("approval binding: expected 64 hex digits (a sha256)")
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as exc:  # a failed credential_process, an expired SSO token, ...
        detail = " ".join(str(exc).split())[:300]
        raise UsageError(
            f"cannot get your AWS credentials to sign with: {detail} (sign in again, e.g. "
            "`aws sso login`, or set AWS_PROFILE or use --profile)"
        ) from None
    if frozen is None:
        raise UsageError(
            "no AWS credentials found: the approver signs with their own (set AWS_PROFILE or "
            "use --profile)"
        )
    request = AWSRequest(
        method=METHOD,
        url=url,
        data=BODY,
        headers={"Content-Type": CONTENT_TYPE, BINDING_HEADER: binding},
    )
    SigV4Auth(frozen, "sts", region).add_auth(request)
    headers = {str(k): _text(v) for k, v in request.headers.items()}
    return {"method": METHOD, "url": url, "headers": headers, "body": BODY}


def signing_region(client: Any) -> str | None:
    """The Region a boto3 client's requests are signed for: its request signer's, which is
    not the client's Region for a global endpoint (the legacy ``sts.amazonaws.com`` signs for
    us-east-1, whatever Region the client was made for)."""
    signer = getattr(client, "_request_signer", None)
    region = getattr(signer, "region_name", None) or client.meta.region_name
    return str(region) if region else None


@dataclass(frozen=True)
class Principal:
    """Who holds an identity's credentials, as far as STS's answer tells: ``keys`` name it
    (two identities with a key in common are the same principal), ``role`` the role of an
    assumed-role session whose session name its holder chose (any session of the role is the
    same principal), ``federated`` a federation token's user (its credentials come from an
    IAM user kmsir cannot see)."""

    arn: str
    keys: frozenset[str]
    role: str | None = None
    federated: bool = False

    def same(self, other: Principal) -> bool:
        return bool(self.keys & other.keys)


def principal(arn: str, user_id: str | None = None) -> Principal:
    """The principal of the identity STS named ``arn`` (``user_id``: its ``UserId``).

    An assumed-role session (``arn:aws:sts::A:assumed-role/R/S``) is its role: the caller of
    ``sts:AssumeRole`` picks the session name ``S``, so one person can be any number of
    sessions; its keys are the role's ARN (without a path: the session's ARN has none) and
    the role's id (``AROA...``, the ``UserId`` before ``:``). A session of an IAM Identity
    Center role (``AWSReservedSSO_...``) is the person signed in: Identity Center sets the
    session name to their sign-in name, so the session's ARN is the key. Anything else (an IAM
    user, a federated user, the root user) is its ARN."""
    session = _SESSION.match(arn)
    if session is not None and not session[3].startswith(SSO_ROLE_PREFIX):
        role = f"arn:{session[1]}:iam::{session[2]}:role/{session[3]}"
        keys = {role}
        if user_id and ":" in user_id and user_id.startswith("AROA"):
            keys.add("role-id:" + user_id.split(":", 1)[0])
        return Principal(arn, frozenset(keys), role=role)
    return Principal(arn, frozenset({arn}), federated=_FEDERATED.match(arn) is not None)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def identify(factory: ClientFactory, signed: Any, expected_url: str) -> Identity:
    """Send the approver's ``signed`` request (``sign``'s dict, as read from an answer file)
    to STS and return whose credentials signed it. Refused before anything is sent when it is
    not exactly the ``GetCallerIdentity`` call for ``expected_url`` (the run's own STS
    endpoint); refused when STS refuses it (a header changed after signing, expired or
    unknown credentials). Checking the binding header is the caller's job."""
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    url, headers = _checked(signed, expected_url)
    session = factory.session()
    client = session.client(
        "sts",
        region_name=factory.resolved_region,
        endpoint_url=factory.endpoint_url,
        config=client_config().merge(Config(signature_version=UNSIGNED)),
    )

    reaches = str(client.meta.endpoint_url)
    if _origin(reaches) != _origin(url):
        raise SignedRequestRefused(
            f"signed request: signed for {url!r}, but the run's STS client reaches {reaches!r}"
        )

    def as_signed(request: Any, **_: Any) -> None:
        # the request goes out as the approver signed it: to their host (checked above, the
        # path is "/"), with their body and headers
        request.body = BODY.encode()
        # botocore's prepared headers: a case-insensitive mapping (setting one replaces it)
        for name, value in headers.items():
            request.headers[name] = value
        request.headers["Content-Length"] = str(len(BODY))

    client.meta.events.register_first("before-send.sts.GetCallerIdentity", as_signed)
    if factory.guard_send:
        refuse_unanswered(client.meta.events)
    with aws_errors("GetCallerIdentity (the approver's signed request)", service="sts"):
        try:
            answer = client.get_caller_identity()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = " ".join(str(error.get("Message", "")).split())[:300]
            raise SignedRequestRefused(
                f"STS refused the approver's signed request: AWS {code}"
                + (f": {message}" if message else "")
            ) from None
    return Identity(
        arn=str(answer["Arn"]),
        account=str(answer["Account"]),
        user_id=str(answer["UserId"]),
        request_id=answer.get("ResponseMetadata", {}).get("RequestId"),
    )


def _checked(signed: Any, expected_url: str) -> tuple[str, dict[str, str]]:
    """``signed``'s URL and headers, when it is the one request an approver signs for
    ``expected_url``; else the one line saying what is wrong."""
    if not isinstance(signed, dict):
        raise SignedRequestRefused("signed request: expected a mapping")
    url = signed.get("url")
    if url != expected_url:
        raise SignedRequestRefused(
            f"signed request: signed for {str(url)[:200]!r}, not for the run's STS endpoint "
            f"{expected_url!r}"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or parts.path not in ("", "/") or parts.query:
        raise SignedRequestRefused(f"signed request: {url[:200]!r} is not an STS endpoint URL")
    if signed.get("method") != METHOD or signed.get("body") != BODY:
        raise SignedRequestRefused(
            f"signed request: not the sts:GetCallerIdentity call (POST {BODY}) an approval signs"
        )
    raw = signed.get("headers")
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise SignedRequestRefused("signed request: headers: expected a mapping of strings")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        lower = name.lower()
        if lower not in ALLOWED_HEADERS or lower in {h.lower() for h in headers}:
            raise SignedRequestRefused(f"signed request: header {name[:64]!r} not accepted")
        if len(value) > MAX_HEADER or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise SignedRequestRefused(f"signed request: header {name!r}: bad value")
        headers[name] = value
    missing = REQUIRED_HEADERS - {h.lower() for h in headers}
    if missing:
        raise SignedRequestRefused(f"signed request: no {', '.join(sorted(missing))} header")
    authorization = next(v for k, v in headers.items() if k.lower() == "authorization")
    if not _AUTHORIZATION.match(authorization):
        raise SignedRequestRefused("signed request: Authorization is not an STS SigV4 signature")
    when = next((v for k, v in headers.items() if k.lower() == "x-amz-date"), "")
    if not AMZ_DATE.match(when):
        raise SignedRequestRefused(
            "signed request: X-Amz-Date is not a SigV4 time (YYYYMMDDTHHMMSSZ)"
        )
    signed_names = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    if BINDING_HEADER.lower() not in signed_names:
        raise SignedRequestRefused(f"signed request: {BINDING_HEADER} is not a signed header")
    return url, headers


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
