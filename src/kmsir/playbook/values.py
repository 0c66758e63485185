"""Value kinds shared by playbook inputs and action parameters: key references, durations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(
    r"^(?:(\d{1,6})w)?(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$"
)
_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# AWS: mrk- and 32 hex digits; moto (the sandbox) writes the hex as a dashed UUID.
_MRK_ID = re.compile(
    r"^mrk-([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
_KEY_ARN = re.compile(
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:"
    rf"(key/({_KEY_ID.pattern[1:-1]}|{_MRK_ID.pattern[1:-1]})|alias/[A-Za-z0-9/_-]{{1,250}})$"
)
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")


def duration_seconds(text: str) -> int:
    """Seconds in a duration like ``45s``, ``30m``, ``36h``, ``7d``, ``2w`` or ``3d4h30m``."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"{text[:60]!r} is not a duration like 30m, 36h, 7d or 2w")
    units = (604800, 86400, 3600, 60, 1)
    return sum(int(n) * unit for n, unit in zip(match.groups(), units, strict=True) if n)


def is_kms_key_reference(text: str) -> bool:
    """True for a key id, multi-Region key id, key ARN, alias name or alias ARN."""
    return bool(
        _KEY_ID.fullmatch(text)
        or _MRK_ID.fullmatch(text)
        or _KEY_ARN.fullmatch(text)
        or _ALIAS.fullmatch(text)
    )


def is_region(text: str) -> bool:
    """True for an AWS Region name like ``eu-west-1``."""
    return bool(_REGION.fullmatch(text))


def parse_time(text: str, now: datetime, *, ahead: bool = False) -> datetime:
    """A point in time: an ISO 8601 timestamp (UTC if no zone) or a duration ago (``7d``), or
    after ``now`` when ``ahead`` (``365d``: an expiry)."""
    text = text.strip()
    try:
        delta = timedelta(seconds=duration_seconds(text))
    except ValueError:
        pass
    else:
        return now + delta if ahead else now - delta
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        example = "365d" if ahead else "7d"
        raise ValueError(
            f"{text[:60]!r} is neither a duration like {example} nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def time_parameter(value: object) -> object:
    """A ``since``/``until``-style parameter, checked: YAML reads an unquoted ISO time as a
    timestamp, which becomes its ISO string; a string must be a duration or an ISO time."""
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, str):
        parse_time(value, datetime.now(timezone.utc))
    return value
