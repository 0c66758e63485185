"""A call to the sandbox, read as botocore would read it: the request's parameters, as its
operation's input shape names them, and moto's answer, as the client parses it (an error's
code and message, or the answer's members). ``trail_record`` makes the CloudTrail record of
them.
"""

from __future__ import annotations

import json
from typing import Any


def error_of(exc: Exception | None) -> tuple[str, str]:
    """The code and message of an AWS error moto raised."""
    return str(getattr(exc, "error_type", "")), str(getattr(exc, "message", "") or exc)


def answered_error(model: Any, operation: Any, result: Any) -> tuple[str, str] | None:
    """The code and message of an error answer, ``None`` for a success."""
    status = int(result[0])
    if status < 300:
        return None
    parsed = _parse_answer(model, operation, result)
    problem = parsed.get("Error") or {}
    return str(problem.get("Code") or status), str(problem.get("Message") or "")


def parsed_response(model: Any, operation: Any, result: Any) -> dict[str, Any]:
    parsed = _parse_answer(model, operation, result)
    parsed.pop("ResponseMetadata", None)
    return parsed


def _parse_answer(model: Any, operation: Any, result: Any) -> dict[str, Any]:
    """The answer as a client reads it (botocore's parser for the service's protocol)."""
    from botocore.awsrequest import HTTPHeaders
    from botocore.parsers import create_parser

    status, headers, body = result
    if isinstance(body, str):
        body = body.encode()
    answer = {
        "status_code": int(status),
        "headers": HTTPHeaders.from_dict({str(k): str(v) for k, v in dict(headers).items()}),
        "body": body or b"",
    }
    try:
        return dict(create_parser(model.protocol).parse(answer, operation.output_shape))
    except Exception:
        return {}


def raw_parameters(response: Any, request: Any, model: Any, operation: Any) -> dict[str, Any]:
    """The request's parameters, as the operation's input shape names them."""
    from moto.core.parse import PROTOCOL_PARSERS
    from moto.core.request import determine_request_protocol

    body = response.body
    if model.protocol == "json" and isinstance(body, str):
        try:
            loaded = json.loads(body or "{}")
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    try:
        protocol = determine_request_protocol(model, request.content_type)
        parser = PROTOCOL_PARSERS[protocol](operation, map_type=dict)
        parsed = parser.parse(
            {
                "method": request.method,
                "values": request.values,
                "headers": request.headers,
                "body": request.data,
                "url_path": request.path,
                "url_params": _url_params(response, request),
            }
        )
    except Exception:
        return {}
    return dict(parsed)


def _url_params(response: Any, request: Any) -> dict[str, Any]:
    """What the request's URL names: moto's routing's, or S3's bucket (its own routing)."""
    if response.boto3_service_name == "s3":
        return {"Bucket": response.parse_bucket_name_from_url(request, request.url)}
    return dict(getattr(response, "uri_match", None) or {})
