"""The second person's identity (issue 21): the approver signs ``sts:GetCallerIdentity`` with
their own credentials (``aws.approver.sign``), the run sends it and takes the identity from
STS's answer (``aws.approver.identify``), which refuses any other request than that one.

moto identifies a caller by the access key id in the Authorization header alone (it checks no
signature: moto/sts/models.py ``get_caller_identity``). AWS checks the SigV4 signature, which
covers every signed header, so a header changed after signing is refused
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html): ``_sts_accepts``
below checks a signature as STS does, from the secret key.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import boto3
import pytest

from kmsir.aws import ClientFactory
from kmsir.aws.approver import (
    BODY,
    Identity,
    SignedRequestRefused,
    identify,
    sign,
)
from kmsir.evidence.approvals import HEADER as BINDING_HEADER

from .approvalkit import REGION, sts_url, user
from .approvalkit import two_users as make_users
from .conftest import LoopbackServer

BINDING = hashlib.sha256(b"run, step, request, approve, saw").hexdigest()


def _sts_accepts(signed: dict[str, Any], secret: str, access_key: str) -> bool:
    """The signature check STS makes: the same request, signed again with the secret key at
    the time it names, carries the same signature."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {k: v for k, v in signed["headers"].items() if k.lower() != "authorization"}
    request = AWSRequest(
        method=signed["method"], url=signed["url"], data=signed["body"], headers=headers
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(access_key, secret), "sts", REGION)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    return bool(signed["headers"]["Authorization"].endswith(f"Signature={expected}"))


@pytest.fixture
def two_users(moto_clients: ClientFactory) -> dict[str, Any]:
    """Two IAM users in the moto account, each with an access key."""
    return make_users(moto_clients)


# -- sign + identify -----------------------------------------------------------------------


def test_each_approvers_key_identifies_its_own_user(two_users: dict[str, Any], net: Any) -> None:
    clients, url = two_users["clients"], two_users["url"]
    seen = []
    for name in ("alice", "bob"):
        session, arn, _ = two_users[name]
        signed = sign(session, url, REGION, BINDING)
        identity = identify(clients, signed, url)
        assert isinstance(identity, Identity)
        assert identity.arn == arn
        assert identity.account == arn.split(":")[4]
        assert identity.request_id
        seen.append(identity.arn)
    assert seen == [two_users["alice"][1], two_users["bob"][1]]
    assert net.refused == []  # signing sends nothing; the sandbox answered the run's send


def test_the_responders_own_identity_is_not_the_approvers(two_users: dict[str, Any]) -> None:
    clients, url = two_users["clients"], two_users["url"]
    responder = clients.client("sts").get_caller_identity()["Arn"]
    signed = sign(two_users["alice"][0], url, REGION, BINDING)
    assert identify(clients, signed, url).arn != responder


def test_signed_request_is_json_safe_and_binds_the_approval(two_users: dict[str, Any]) -> None:
    import json

    session, _, secret = two_users["alice"]
    url = two_users["url"]
    signed = sign(session, url, REGION, BINDING)
    assert json.loads(json.dumps(signed)) == signed
    assert signed["method"] == "POST" and signed["url"] == url and signed["body"] == BODY
    assert signed["headers"][BINDING_HEADER] == BINDING
    authorization = signed["headers"]["Authorization"]
    assert "x-kmsir-approval" in authorization.split("SignedHeaders=")[1].split(",")[0]
    access_key = session.get_credentials().access_key
    assert _sts_accepts(signed, secret, access_key)


def test_a_header_changed_after_signing_breaks_the_signature(two_users: dict[str, Any]) -> None:
    """The binding is signed: an answer file whose header was edited to bind another
    decision carries a signature AWS refuses (moto would not notice; the run also recomputes
    the binding from the file's fields and compares)."""
    session, _, secret = two_users["alice"]
    signed = sign(session, two_users["url"], REGION, BINDING)
    access_key = session.get_credentials().access_key
    forged = copy.deepcopy(signed)
    forged["headers"][BINDING_HEADER] = hashlib.sha256(b"deny instead").hexdigest()
    assert not _sts_accepts(forged, secret, access_key)
    assert _sts_accepts(signed, secret, access_key)


def test_temporary_credentials_sign_with_their_session_token(two_users: dict[str, Any]) -> None:
    session = boto3.Session(
        aws_access_key_id="ASIAEXAMPLEEXAMPLE01",
        aws_secret_access_key="secret",
        aws_session_token="the-session-token",
        region_name=REGION,
    )
    signed = sign(session, two_users["url"], REGION, BINDING)
    assert signed["headers"]["X-Amz-Security-Token"] == "the-session-token"
    signed_headers = signed["headers"]["Authorization"].split("SignedHeaders=")[1]
    assert "x-amz-security-token" in signed_headers.split(",")[0]


def test_identify_over_http_to_a_loopback_sts(moto_server: LoopbackServer) -> None:
    """The same path against an STS reached over the wire (``sandbox serve``, or AWS)."""
    clients = ClientFactory(
        session_factory=lambda: boto3.Session(region_name=REGION),
        region=REGION,
        endpoint_url=moto_server.endpoint,
    )
    session, arn, _ = user(clients, "carol")
    url = sts_url(clients)
    assert url.startswith("http://127.0.0.1:")
    identity = identify(clients, sign(session, url, REGION, BINDING), url)
    assert identity.arn == arn


def test_no_credentials_to_sign_with_is_one_line(tmp_path: Any, monkeypatch: Any) -> None:
    from kmsir.errors import UsageError

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="no AWS credentials found"):
        sign(
            boto3.Session(region_name=REGION),
            "https://sts.eu-west-1.amazonaws.com",
            REGION,
            BINDING,
        )


# -- what identify refuses before sending ----------------------------------------------------


def _refused(two_users: dict[str, Any], change: Any, expected_url: str | None = None) -> str:
    clients, url = two_users["clients"], two_users["url"]
    signed = sign(two_users["alice"][0], url, REGION, BINDING)
    change(signed)
    with pytest.raises(SignedRequestRefused) as caught:
        identify(clients, signed, expected_url or url)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_request_signed_for_another_url_is_refused(two_users: dict[str, Any]) -> None:
    message = _refused(two_users, lambda s: s.update(url="https://sts.us-east-1.amazonaws.com"))
    assert "not for the run's STS endpoint" in message
    # the run's endpoint is the journal's: a request signed for it but sent elsewhere is not
    message = _refused(two_users, lambda s: None, expected_url="https://evil.example/")
    assert "https://evil.example/" in message


def test_another_call_than_get_caller_identity_is_refused(two_users: dict[str, Any]) -> None:
    for change in (
        lambda s: s.update(body="Action=AssumeRole&Version=2011-06-15&RoleArn=x"),
        lambda s: s.update(body=BODY + "&Extra=1"),
        lambda s: s.update(method="GET"),
    ):
        assert "not the sts:GetCallerIdentity call" in _refused(two_users, change)


def test_headers_kmsir_does_not_sign_are_refused(two_users: dict[str, Any]) -> None:
    def extra(s: dict[str, Any]) -> None:
        s["headers"]["Host"] = "sts.amazonaws.com"

    def unsigned_binding(s: dict[str, Any]) -> None:
        auth = s["headers"]["Authorization"]
        s["headers"]["Authorization"] = auth.replace(";x-kmsir-approval", "")

    def no_signature(s: dict[str, Any]) -> None:
        del s["headers"]["Authorization"]

    def injected(s: dict[str, Any]) -> None:
        s["headers"][BINDING_HEADER] += "\r\nX-Other: 1"

    assert "'Host' not accepted" in _refused(two_users, extra)
    assert "X-Kmsir-Approval is not a signed header" in _refused(two_users, unsigned_binding)
    assert "no authorization header" in _refused(two_users, no_signature)
    assert "bad value" in _refused(two_users, injected)
    assert "expected a mapping" in _refused(two_users, lambda s: s.update(headers=["x"]))


def test_not_a_mapping_is_refused(two_users: dict[str, Any]) -> None:
    with pytest.raises(SignedRequestRefused, match="expected a mapping"):
        identify(two_users["clients"], ["POST"], two_users["url"])


def test_credentials_that_cannot_be_had_are_one_line(tmp_path: Any, monkeypatch: Any) -> None:
    """A profile whose credentials fail to come (a credential_process that fails, as an
    expired SSO sign-in does) is a usage error, not an internal one."""
    from kmsir.errors import UsageError

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    config.write_text("[profile broken]\ncredential_process = /bin/false\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    with pytest.raises(UsageError) as caught:
        sign(
            boto3.Session(profile_name="broken", region_name=REGION),
            "https://sts.eu-west-1.amazonaws.com",
            REGION,
            BINDING,
        )
    message = str(caught.value)
    assert message.startswith("cannot get your AWS credentials to sign with: ")
    assert "\n" not in message


def test_a_request_time_that_is_not_sigv4s_is_refused(two_users: dict[str, Any]) -> None:
    def when(s: dict[str, Any]) -> None:
        s["headers"]["X-Amz-Date"] = "yesterday"

    assert "X-Amz-Date is not a SigV4 time" in _refused(two_users, when)
