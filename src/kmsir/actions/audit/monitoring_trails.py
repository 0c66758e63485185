"""The trails the review's Region sees, read once per review, and what each records of KMS.

A trail's selection is read as CloudTrail applies it: its advanced event selectors when it
has any, else its basic ones, else AWS's default (every management event, read and write).
KMS's cryptographic operations (``Decrypt``, ``Encrypt``, ``GenerateDataKey``) are *read*
management events; key changes (``DisableKey``, ``ScheduleKeyDeletion``, ``PutKeyPolicy``)
are write events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.actions.audit.data_keys import partition as region_partition
from kmsir.actions.audit.data_keys import setting_arn
from kmsir.actions.kmskeys import strip_metadata

KMS = "kms.amazonaws.com"


def partition(audit: AuditContext) -> str:
    """The AWS partition of the review's Region (``aws``, ``aws-cn``, ``aws-us-gov``)."""
    return region_partition(audit.region)


def setting(audit: AuditContext, service: str, name: str) -> str:
    """An account-level setting of the Region as a resource, in the ARN style of the
    review's other settings (service, Region, account, setting)."""
    return setting_arn(audit, service, name)


@dataclass(frozen=True)
class Trail:
    """One trail as the review's Region sees it (its own, or the shadow of another Region's
    or of the organisation's): its ``DescribeTrails`` entry, ``GetTrailStatus`` and
    ``GetEventSelectors``, or why those two could not be read."""

    description: dict[str, Any]
    status: dict[str, Any] | None = None
    selectors: dict[str, Any] | None = None
    unavailable: Unavailable | None = None

    @property
    def arn(self) -> str:
        return str(self.description["TrailARN"])

    @property
    def name(self) -> str:
        return str(self.description.get("Name") or self.arn.rsplit("/", 1)[-1])

    @property
    def logging(self) -> bool:
        return bool((self.status or {}).get("IsLogging"))

    def kms(self) -> tuple[bool, bool]:
        """Whether KMS's (read, write) management events are selected."""
        advanced = (self.selectors or {}).get("AdvancedEventSelectors") or []
        basic = (self.selectors or {}).get("EventSelectors") or []
        if advanced:
            read = any(_selects(s, "true") for s in advanced)
            return read, any(_selects(s, "false") for s in advanced)
        if not basic:  # AWS answers with its default selector; moto with none
            return True, True
        read = write = False
        for selector in basic:
            if not selector.get("IncludeManagementEvents", True):
                continue
            if KMS in (selector.get("ExcludeManagementEventSources") or []):
                continue
            kind = selector.get("ReadWriteType", "All")
            read, write = read or kind != "WriteOnly", write or kind != "ReadOnly"
        return read, write

    def logs_kms(self) -> bool:
        """Logging now, with some KMS management events selected."""
        return self.logging and any(self.kms())

    def gaps(self) -> list[str]:
        """Why this trail does not record every KMS call in every Region (none: it does)."""
        read, write = self.kms()
        found = [] if self.description.get("IsMultiRegionTrail") else ["not multi-Region"]
        found += [] if self.logging else ["not logging (GetTrailStatus IsLogging false)"]
        if not read and not write:
            found.append("KMS management events not selected (excluded, or management off)")
        elif not write:
            found.append("KMS write events (DisableKey, ScheduleKeyDeletion...) not selected")
        elif not read:
            found.append("KMS read events (Decrypt, Encrypt, GenerateDataKey) not selected")
        return found


@dataclass(frozen=True)
class Trails:
    """Every trail the Region sees, and the artifacts of the responses read."""

    items: tuple[Trail, ...]
    evidence: tuple[str, ...]


def trails(audit: AuditContext) -> Trails:
    """Every trail the review's Region sees (``includeShadowTrails``: a multi-Region or
    organisation trail made elsewhere counts), read once per review."""
    return audit.shared("cloudtrail:trails", lambda: _read_trails(audit))


def _read_trails(audit: AuditContext) -> Trails:
    cloudtrail = audit.client("cloudtrail")
    listed = audit.call(
        "cloudtrail",
        "DescribeTrails",
        lambda: cloudtrail.describe_trails(includeShadowTrails=True)["trailList"],
    )
    found = [_read_trail(audit, dict(entry)) for entry in listed]
    statuses = {t.arn: t.status for t in found if t.unavailable is None}
    selectors = {t.arn: t.selectors for t in found if t.unavailable is None}
    evidence = (
        audit.evidence("cloudtrail/trails", {"trailList": listed}),
        audit.evidence("cloudtrail/trail-status", statuses),
        audit.evidence("cloudtrail/event-selectors", selectors),
    )
    return Trails(items=tuple(found), evidence=evidence)


def _read_trail(audit: AuditContext, entry: dict[str, Any]) -> Trail:
    """One trail's status (this Region's, asked by ARN, as a shadow trail's must be) and
    event selectors (asked in the trail's home Region)."""
    arn = str(entry["TrailARN"])
    factory: Any = audit.ctx.clients
    here = audit.client("cloudtrail")
    home = factory.client("cloudtrail", entry.get("HomeRegion") or audit.region)
    try:
        status = audit.call("cloudtrail", "GetTrailStatus", lambda: here.get_trail_status(Name=arn))
        chosen = audit.call(
            "cloudtrail", "GetEventSelectors", lambda: home.get_event_selectors(TrailName=arn)
        )
    except Unavailable as exc:
        return Trail(description=entry, unavailable=exc)
    return Trail(entry, strip_metadata(status), strip_metadata(chosen))


def _selects(selector: dict[str, Any], read_only: str) -> bool:
    """Whether an advanced event selector selects KMS's management events of one kind
    (``readOnly`` "true" or "false"). A filter on any other field narrows it to some KMS
    events only: not counted."""
    event = {"eventCategory": "Management", "eventSource": KMS, "readOnly": read_only}
    fields = selector.get("FieldSelectors") or []
    if not any(f.get("Field") == "eventCategory" for f in fields):
        return False
    return all(_field_matches(f, event.get(str(f.get("Field")))) for f in fields)


def _field_matches(selector: dict[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    tests: dict[str, Callable[[str], bool]] = {
        "Equals": value.__eq__,
        "StartsWith": value.startswith,
        "EndsWith": value.endswith,
        "NotEquals": value.__eq__,
        "NotStartsWith": value.startswith,
        "NotEndsWith": value.endswith,
    }
    for operator, test in tests.items():
        wanted = selector.get(operator)
        if wanted is not None and any(test(str(v)) for v in wanted) == operator.startswith("Not"):
            return False
    return True
