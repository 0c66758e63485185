"""Which calls the sandbox's CloudTrail records (``recorder``), and what S3 names a request.

A call that changes the world (not ``Describe*``/``Get*``/``List*``/``Lookup*``/``Head*``, not
S3's object-level data calls, which a trail of management events does not log) or a KMS
cryptographic call is recorded. S3 routes its requests for itself, so the operation a
bucket-level request makes is read from botocore's S3 model (its ``requestUri`` of
``/{Bucket}?subresource`` and HTTP method): every bucket-level write moto's S3 answers is
named, intelligent-tiering, metrics, inventory, analytics, accelerate, requestPayment and
ownership controls included, with no hand-kept list to fall behind.
"""

from __future__ import annotations

import functools
from typing import Any

from kmsir.trail.catalogue import CRYPTO_OPERATIONS

#: KMS's cryptographic operations: recorded although they change nothing, read-only.
CRYPTO = CRYPTO_OPERATIONS
_READ_PREFIXES = ("Describe", "Get", "List", "Lookup", "Head")
#: Named like a read, but hands out material that changes what the key can become.
_NOT_READS = frozenset({"GetParametersForImport"})
#: S3's object-level (data) calls: a trail logging management events does not record them.
S3_DATA_CALLS = frozenset(
    {
        "PutObject",
        "CopyObject",
        "DeleteObject",
        "DeleteObjects",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "RestoreObject",
        "SelectObjectContent",
        "PutObjectAcl",
        "PutObjectTagging",
        "DeleteObjectTagging",
        "PutObjectRetention",
        "PutObjectLegalHold",
        "WriteGetObjectResponse",
    }
)


def recorded(service: str, operation: str) -> bool:
    """True when a call of ``operation`` to ``service`` (botocore names) is recorded."""
    if service == "kms" and operation in CRYPTO:
        return True
    if service == "s3" and operation in S3_DATA_CALLS:
        return False
    return operation in _NOT_READS or not operation.startswith(_READ_PREFIXES)


def read_only(service: str, operation: str) -> bool:
    """The record's ``readOnly``: KMS's cryptographic calls and GetParametersForImport (AWS
    logs it read-only: ct-getparametersforimport), not the changes."""
    return service == "kms" and (operation in CRYPTO or operation in _NOT_READS)


def s3_bucket_action(request: Any) -> str | None:
    """The S3 operation a bucket-level request makes (``None``: a read, or unknown)."""
    method = str(request.method).upper()
    routes = _s3_bucket_routes()
    query = list(request.args.keys())
    for name in query:
        if (name, method) in routes:
            return routes[(name, method)]
    if query:
        return None  # a read of a subresource, or one S3 does not have
    return routes.get(("", method))


@functools.cache
def _s3_bucket_routes() -> dict[tuple[str, str], str]:
    """(subresource, HTTP method) -> operation, for every bucket-level operation of botocore's
    S3 model that is not a GET or HEAD; ``""``: the bucket itself (CreateBucket,
    DeleteBucket). Where two operations share a route (PutBucketLifecycle and its
    ...Configuration successor), the one botocore does not call deprecated wins."""
    from botocore.session import get_session

    model = get_session().get_service_model("s3")
    routes: dict[tuple[str, str], str] = {}
    for name in model.operation_names:
        operation = model.operation_model(name)
        method = str(operation.http.get("method", "")).upper()
        path, _, query = str(operation.http.get("requestUri", "")).partition("?")
        if path.rstrip("/") != "/{Bucket}" or method in ("GET", "HEAD"):
            continue
        subresource = query.split("&")[0].split("=")[0]
        if subresource == "x-id":
            continue  # routed by a parameter moto's S3 does not read
        route = (subresource, method)
        if route not in routes or model.operation_model(routes[route]).deprecated:
            routes[route] = name
    return routes
