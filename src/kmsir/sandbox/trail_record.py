"""One call to the sandbox as CloudTrail records it (``recorder`` decides which, and keeps them).

AWS's KMS log entries are the model (the developer guide's examples under "Logging AWS KMS API
calls with AWS CloudTrail"): ``userIdentity`` from moto's STS view of the caller's access key
(the ARN the sandbox's GetCallerIdentity answers; an assumed role's session with its
``creationDate``), camelCase ``requestParameters`` (structure members; map keys such as an
encryption context's stay as they are) without binary or sensitive fields (Plaintext,
CiphertextBlob, ImportToken, Signature...) nor grant tokens (bearer credentials botocore does
not call sensitive), ``responseElements`` as the client reads the answer (null for KMS's
cryptographic calls, whose answers are material, and for GetParametersForImport; a KMS change
that answers nothing names its key's ARN as ``keyId``, as AWS logs since December 2022), KMS's
timestamps in its words, the keys a KMS call names in ``resources`` (an alias's call: the
alias's ARN and the keys it pointed to before the call and points to after),
``errorCode``/``errorMessage`` for a refused call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox import trail_answer
from kmsir.sandbox.trail_calls import CRYPTO, read_only

__all__ = ["CRYPTO", "Caller", "build", "caller_identity", "camel", "refused"]

#: What every record of a call to an AWS API says of its kind.
_API_CALL = {"eventType": "AwsApiCall", "managementEvent": True, "eventCategory": "Management"}

#: Request parameters that name a key (the record's ``resources``).
_KEY_PARAMS = ("KeyId", "SourceKeyId", "DestinationKeyId", "TargetKeyId")
#: KMS's alias calls: their records name the alias and its keys.
ALIAS_CALLS = frozenset({"CreateAlias", "UpdateAlias", "DeleteAlias"})


@dataclass(frozen=True)
class Caller:
    """Who makes the call, where from and when, as the record tells it (``None``: as the
    request says; the sandbox's clock gives ``moment``)."""

    moment: datetime
    identity: dict[str, Any] | None = None
    source_ip: str | None = None
    user_agent: str | None = None


def build(
    response: Any,
    request: Any,
    result: Any,
    exc: Exception | None,
    action: str,
    caller: Caller,
    alias_keys: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """The record of moto's answer ``result`` (or of the AWS error ``exc`` it raised) to
    ``request`` (``response``: moto's handler, set up with it); ``alias_keys``: the key ARNs
    an alias call's alias pointed to before the call (``alias_target``). ``requestID`` and
    ``eventID`` are left empty for the recorder. ``None``: not an answer AWS gives (moto
    failed)."""
    from moto.core.utils import get_service_model

    if result is not None:
        status = int(result[0])
    elif isinstance(getattr(exc, "error_type", None), str):  # moto's AWS errors, raised
        status = int(getattr(exc, "code", 400))
    else:
        return None
    model = get_service_model(response.boto3_service_name)
    operation = model.operation_model(action)
    error = (
        trail_answer.error_of(exc)
        if result is None
        else trail_answer.answered_error(model, operation, result)
    )
    raw = trail_answer.raw_parameters(response, request, model, operation)
    parsed = (
        {} if error or status >= 300 else trail_answer.parsed_response(model, operation, result)
    )
    served = bool(getattr(request, "from_wsgi_server", False))
    address = str(request.remote_addr) if served and request.remote_addr else "127.0.0.1"
    account = str(response.current_account)
    record: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": caller.identity or caller_identity(response, caller.moment),
        "eventTime": caller.moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": f"{model.endpoint_prefix}.amazonaws.com",
        "eventName": action,
        "awsRegion": response.region,
        "sourceIPAddress": caller.source_ip or address,
        "userAgent": caller.user_agent or str(response.headers.get("User-Agent", "")),
    }
    if error is not None:
        record["errorCode"], record["errorMessage"] = error
    elements = _plain(parsed, operation.output_shape) if parsed else None
    parameters = _plain(raw, operation.input_shape)
    if isinstance(parameters, dict) and "bucket" in parameters:  # CloudTrail's name for it
        parameters = {"bucketName": parameters.pop("bucket"), **parameters}
    kms = model.endpoint_prefix == "kms"
    arns = _kms_resources(response, action, raw, parsed, alias_keys) if kms else []
    keys = [arn for arn in arns if ":key/" in arn]
    if kms and error is None and keys:  # as AWS logs since December 2022 (ct-creategrant)
        if action in ALIAS_CALLS:
            elements = {"keyId": keys[-1]}  # the alias's target: the new one, or the deleted's
        elif not elements:
            elements = {"keyId": keys[0]}  # the call answers nothing: the key's ARN
        elif action == "CreateGrant":
            elements = {**elements, "keyId": keys[0]}
    if action in CRYPTO or action == "GetParametersForImport":
        elements = None  # material, or an import token and public key: never logged
    record.update(
        requestParameters=parameters or None,
        responseElements=elements or None,
        requestID="",
        eventID="",
        readOnly=read_only(response.boto3_service_name, action),
    )
    if arns:
        record["resources"] = [
            {"accountId": arn.split(":")[4], "type": "AWS::KMS::Key", "ARN": arn} for arn in arns
        ]
    record.update(_API_CALL, recipientAccountId=account)
    return record


def refused(
    account: str,
    region: str,
    action: str,
    params: dict[str, Any],
    error: tuple[str, str],
    caller: Caller,
    key_arn: str | None,
) -> dict[str, Any]:
    """The record of a KMS call refused before it reached moto (an inject's contained actor:
    the sandbox decides the refusal itself), as ``build`` would make it."""
    from moto.core.utils import get_service_model

    operation = get_service_model("kms").operation_model(action)
    record: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": caller.identity,
        "eventTime": caller.moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com",
        "eventName": action,
        "awsRegion": region,
        "sourceIPAddress": caller.source_ip or "127.0.0.1",
        "userAgent": caller.user_agent or "",
        "errorCode": error[0],
        "errorMessage": error[1],
        "requestParameters": _plain(params, operation.input_shape) or None,
        "responseElements": None,
        "requestID": "",
        "eventID": "",
        "readOnly": read_only("kms", action),
    }
    if key_arn:
        record["resources"] = [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}]
    record.update(_API_CALL, recipientAccountId=account)
    return record


def caller_identity(response: Any, moment: datetime) -> dict[str, Any]:
    """The ``userIdentity`` of a request's caller, as moto's STS answers GetCallerIdentity for
    its access key (the sandbox's operator is recorded from that answer: the trail agrees
    with it): an assumed role's session (with its issuer and when the session began, on the
    sandbox's clock), the account's root, or a user (moto's own default user for credentials
    it never issued)."""
    from moto.sts.models import sts_backends

    key = response.get_access_key()
    backend = sts_backends[response.current_account][response.partition]
    principal, arn, account = backend.get_caller_identity(key, response.region)
    partition = arn.split(":")[1]
    if ":assumed-role/" in arn:
        role = arn.split(":assumed-role/", 1)[1].split("/")[0]
        session = backend.get_assumed_role_from_access_key(key)
        began = _session_began(getattr(session, "access_key", None), moment)
        return {
            "type": "AssumedRole",
            "principalId": principal,
            "arn": arn,
            "accountId": account,
            "accessKeyId": key,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": principal.split(":")[0],
                    "arn": f"arn:{partition}:iam::{account}:role/{role}",
                    "accountId": account,
                    "userName": role,
                },
                "attributes": {"creationDate": began, "mfaAuthenticated": "false"},
            },
        }
    if arn.endswith(":root"):
        return {
            "type": "Root",
            "principalId": account,
            "arn": arn,
            "accountId": account,
            "accessKeyId": key,
        }
    return {
        "type": "IAMUser",
        "principalId": principal,
        "arn": arn,
        "accountId": account,
        "accessKeyId": key,
        "userName": arn.rsplit("/", 1)[-1],
    }


def _session_began(access_key: Any, moment: datetime) -> str:
    """When an assumed role's session began, on the sandbox's clock: as long before
    ``moment`` as moto issued its credentials before now."""
    from datetime import timedelta

    issued = getattr(access_key, "create_date", None)
    age = timedelta(0)
    if isinstance(issued, datetime):
        if issued.tzinfo is None:
            issued = issued.replace(tzinfo=timezone.utc)
        age = max(datetime.now(timezone.utc) - issued, timedelta(0))
    return (moment - age).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_DROP = object()
#: Members naming a KMS key that a service model calls sensitive (S3's), logged all the same.
_KEY_IDS = frozenset({"KMSMasterKeyID", "SSEKMSKeyId"})
#: Members never logged although botocore does not call them sensitive: grant tokens are
#: bearer credentials (AWS logs a CreateGrant's grantId and keyId, never its grantToken).
_NEVER_LOGGED = frozenset({"GrantToken", "GrantTokens"})


def camel(service: str, shape: str, value: Any) -> Any:
    """``value``, of the ``shape`` named in ``service``'s model, as CloudTrail writes it."""
    from moto.core.utils import get_service_model

    return _plain(value, get_service_model(service).shape_for(shape))


def _plain(value: Any, shape: Any) -> Any:
    """``value`` as CloudTrail writes it: structure members camelCase (an acronym stays as it
    is), map keys as they are, timestamps in KMS's words, binary and sensitive members left
    out (``_DROP``; a key id the model calls sensitive is no secret: AWS logs it)."""
    if shape is None:
        return value
    if shape.type_name == "blob" or shape.metadata.get("sensitive"):
        return _DROP
    if shape.type_name == "structure" and isinstance(value, dict):
        out = {}
        for name, member in shape.members.items():
            if name in _NEVER_LOGGED:
                continue
            if name in value and value[name] is not None:
                kept = value[name] if name in _KEY_IDS else _plain(value[name], member)
                if kept is not _DROP:
                    out[name if name[1:2].isupper() else name[:1].lower() + name[1:]] = kept
        return out
    if shape.type_name == "list" and isinstance(value, list):
        items = [_plain(item, shape.member) for item in value]
        return [item for item in items if item is not _DROP]
    if shape.type_name == "map" and isinstance(value, dict):
        pairs = {k: _plain(v, shape.value) for k, v in value.items()}
        return {k: v for k, v in pairs.items() if v is not _DROP}
    if shape.type_name == "timestamp":
        return _when(value)
    return value


def _when(value: Any) -> Any:
    """A timestamp as KMS's records write it: ``Dec 2, 2026, 5:00:00 AM``."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, timezone.utc)
    if not isinstance(value, datetime):
        return value
    hour = value.hour % 12 or 12
    return f"{value:%b} {value.day}, {value.year}, {hour}:{value:%M:%S} {value:%p}"


def alias_target(response: Any, action: str) -> tuple[str, ...]:
    """Before an alias call is made: the ARN of the key its alias points to (none: the alias
    does not exist yet), for the record's ``resources`` (after the call, a deleted or moved
    alias no longer tells)."""
    if action not in ALIAS_CALLS or response.boto3_service_name != "kms":
        return ()
    try:
        name = json.loads(response.body or "{}").get("AliasName")
        key = response.kms_backend.get_key_id_from_alias(name) if isinstance(name, str) else None
        return (str(response.kms_backend.keys[key].arn),) if key else ()
    except Exception:
        return ()


def _kms_resources(
    response: Any, action: str, raw: dict[str, Any], parsed: dict[str, Any], before: tuple[str, ...]
) -> list[str]:
    """The ARNs a KMS record's ``resources`` name: the keys its request names or its answer
    does (Decrypt, CreateKey); an alias call's, the alias and its keys, old and new, in the
    order of the developer guide's examples (ct-createalias: key, alias; ct-updatealias and
    DeleteAlias: alias, then keys)."""
    from moto.utilities.utils import get_partition

    keys = _key_arns(response, raw, parsed)
    name = raw.get("AliasName")
    if action not in ALIAS_CALLS or not isinstance(name, str) or not name:
        return keys
    region, account = response.region, str(response.current_account)
    alias = f"arn:{get_partition(region)}:kms:{region}:{account}:{name}"
    if action == "CreateAlias":
        return [*keys, alias]
    return [alias, *dict.fromkeys([*before, *keys])]


def _key_arns(response: Any, raw: dict[str, Any], parsed: dict[str, Any]) -> list[str]:
    """The ARNs of the keys a KMS request names, or its answer does (Decrypt, CreateKey)."""
    from kmsir.sandbox.shim.common import find_key

    refs: list[Any] = [raw.get(name) for name in _KEY_PARAMS]
    refs += [parsed.get("KeyId"), parsed.get("SourceKeyId")]
    refs.append((parsed.get("KeyMetadata") or {}).get("Arn"))
    arns: list[str] = []
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            continue
        try:
            arn = str(find_key(response.kms_backend, ref, aliases=True).arn)
        except Exception:
            arn = ref if ref.startswith("arn:") and ":key/" in ref else ""
        if arn and arn not in arns:
            arns.append(arn)
    return arns
