"""CloudTrail's ``ListPublicKeys`` (moto lacks it): the key that signs the sandbox's digests.

Following the API reference (https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_ListPublicKeys.html):
the public keys whose private keys signed digest files within ``StartTime``-``EndTime`` (each
defaults to the current time: without them, the current key), each with its validity, its
fingerprint and its ``Value``, a blob. The sandbox has one key (``trail_digests.public_key``),
valid a year either side of the world's time; its blob is the key's PKCS #1 DER, so the JSON
wire value is that DER in base64, as AWS sends it: the AWS CLI (v1) keeps blobs as the wire
text, and its ``validate-logs`` base64-decodes ``Value`` and loads the result as PKCS #1 DER;
boto3 decodes the blob and hands over the DER itself (``digest_format.der_key`` takes both).
The digests due are written first
(``trail_digests.flush_account``), as AWS has them written by the time one asks.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox import trail_digests
from kmsir.sandbox.shim.common import error
from kmsir.trail import digest_format

_INSTALLED = "_kmsir_list_public_keys"


def _moment(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), timezone.utc)
        text = str(value)
        try:
            return datetime.fromtimestamp(float(text), timezone.utc)
        except ValueError:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise error("InvalidTimeRangeException", f"Invalid time: {value}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def list_public_keys(response: Any) -> str:
    """The ``ListPublicKeys`` handler, installed as ``CloudTrailResponse.list_public_keys``."""
    now = datetime.now(timezone.utc)
    start = _moment(response._get_param("StartTime"), now)
    end = _moment(response._get_param("EndTime"), now)
    if start > end:
        raise error("InvalidTimeRangeException", "StartTime must be before EndTime.")
    trail_digests.flush_account(str(response.current_account), str(response.region))
    key = trail_digests.public_key()
    valid_from = digest_format.parse_iso(str(key.valid_from))
    valid_until = digest_format.parse_iso(str(key.valid_until))
    listed = []
    if (
        valid_from is not None
        and valid_until is not None
        and valid_from <= end
        and start <= valid_until
    ):
        listed.append(
            {
                "Value": base64.b64encode(key.der).decode(),
                "ValidityStartTime": valid_from.timestamp(),
                "ValidityEndTime": valid_until.timestamp(),
                "Fingerprint": key.fingerprint,
            }
        )
    return json.dumps({"PublicKeyList": listed})


def install() -> None:
    """Add ``list_public_keys`` to moto's CloudTrail responses (idempotent); fail loudly if
    moto answers it itself."""
    from moto.cloudtrail.responses import CloudTrailResponse

    if getattr(CloudTrailResponse, _INSTALLED, False):
        return
    if hasattr(CloudTrailResponse, "list_public_keys"):
        raise RuntimeError(
            "moto now answers ListPublicKeys itself: the sandbox's fidelity shim "
            "(kmsir.sandbox.shim.cloudtrail_keys) must be reviewed for this moto version"
        )
    setattr(CloudTrailResponse, "list_public_keys", list_public_keys)  # noqa: B010
    setattr(CloudTrailResponse, _INSTALLED, True)
