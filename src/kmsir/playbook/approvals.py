"""A second person's approval, as a playbook asks for it (the two-person rule).

``approvals: {count: 1, from: [arn-or-glob, ...]}`` on a step (or at the playbook's top level,
for every irreversible or high-impact step) and ``approval_timeout: 30m`` on a step. The run
side (``run.second_person``) waits for the approvals; this module only says what was asked.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kmsir.playbook.values import duration_seconds

#: How long a step waits for its approvals when ``approval_timeout`` is not given.
DEFAULT_TIMEOUT_SECONDS = 30 * 60
#: The longest ``approval_timeout``: a day.
MAX_TIMEOUT_SECONDS = 86_400
#: The shortest ``approval_timeout``: a minute.
MIN_TIMEOUT_SECONDS = 60
_PATTERN = r"^arn:[A-Za-z0-9*?-]*:(iam|sts|\*):"


def _arn_pattern(value: str) -> str:
    if not re.match(_PATTERN, value):
        raise ValueError(
            f"{value[:60]!r} is not an IAM or STS ARN or a glob of one "
            "(arn:aws:iam::111122223333:user/*)"
        )
    return value


#: An approver pattern: an IAM or STS ARN, ``*`` and ``?`` matching any characters.
Pattern = Annotated[
    str,
    Field(max_length=256, json_schema_extra={"pattern": _PATTERN}),
    AfterValidator(_arn_pattern),
]


class Approvals(BaseModel):
    """How many distinct people other than the responder must approve, and who may."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    count: int = Field(
        default=1, ge=1, le=5, description="How many distinct approvers (1 to 5) must approve."
    )
    from_: tuple[Pattern, ...] = Field(
        default=(),
        alias="from",
        max_length=20,
        description="Who may approve: IAM/STS ARNs or globs "
        '("arn:aws:iam::111122223333:user/*"); an assumed-role session also matches its '
        "role's ARN. Empty: anyone but the run's operator.",
    )


def timeout_seconds(value: str | None) -> int:
    """Seconds of an ``approval_timeout`` (its default when ``None``)."""
    return DEFAULT_TIMEOUT_SECONDS if value is None else duration_seconds(value)


def check_timeout(value: str | None) -> str | None:
    """An ``approval_timeout`` checked: a duration (``30m``, ``2h``) from a minute to a day
    (less than a minute leaves nobody the time to read the preview and answer)."""
    if value is None:
        return value
    seconds = timeout_seconds(value)
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{value[:40]} is longer than a day")
    if seconds < MIN_TIMEOUT_SECONDS:
        raise ValueError(f"{value[:40]} is shorter than a minute (the least is 1m)")
    return value
