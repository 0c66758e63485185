"""The hidden parts of a scenario: what a tabletop's facilitator knows and the players do not.

A scenario's ``briefing`` is what the players are told (the page that starts the exercise);
these records are what is true and what is expected of them: ``GroundTruth`` (what the
attacker did: which key, principal, grant, access key, and when), ``ExpectedSpec`` (per step
of the playbook: the decision expected, acceptable alternatives, and why), ``EvidenceSpec``
(what the team should have looked at), ``PreventionSpec`` (which of the ten best practices
would have prevented or shortened it) and ``TargetsSpec`` (the times to beat). They are plain
text, never templates: the facilitator's screen and the debrief show them as written. What
spans records (the names they use, the playbook's steps and choices) is checked when the
scenario loads (``scenario_checks``).

Players never see them: no player screen, journal entry or report carries them, and the
scenario's fingerprint leaves them out (editing the rubric does not break a resume).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kmsir.playbook.values import duration_seconds

__all__ = [
    "HIDDEN_FIELDS",
    "EvidenceSpec",
    "ExpectedSpec",
    "GroundTruth",
    "PreventionSpec",
    "TargetsSpec",
    "TimelineSpec",
]

#: The scenario's fields players never see (with ``title`` and ``briefing``, what the
#: fingerprint leaves out).
HIDDEN_FIELDS = ("ground_truth", "expected", "evidence_to_see", "prevented_by", "targets")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimelineSpec(_Model):
    """One moment of what really happened, ``at`` a duration before the exercise (``-2d``)."""

    at: str
    what: str = Field(min_length=1)

    @field_validator("at")
    @classmethod
    def _relative(cls, value: str) -> str:
        duration_seconds(value.removeprefix("-"))
        return value


class GroundTruth(_Model):
    """What the attacker (or the mistake) did. ``key`` names one of the scenario's keys,
    ``principal`` one of its identities, ``grant`` one of its grants, ``access_key`` one of
    its users (whose access key was used)."""

    summary: str = Field(min_length=1)
    key: str
    principal: str | None = None
    grant: str | None = None
    access_key: str | None = None
    timeline: list[TimelineSpec] = Field(default_factory=list, max_length=50)


class ExpectedSpec(_Model):
    """The decision expected at a step: ``answer`` as the journal's decision records it
    (``approved`` or ``skipped`` for a step's approval, the choice for an ``ask`` step),
    ``alternatives`` also acceptable, ``why`` in one line, and (optionally) the minutes the
    team should take to decide once asked."""

    answer: str = Field(min_length=1)
    alternatives: list[str] = Field(default_factory=list)
    why: str = Field(min_length=1)
    within_minutes: float | None = Field(default=None, gt=0)


class EvidenceSpec(_Model):
    """Evidence the team should see: seen once ``step`` succeeded and, when ``event`` is
    given, that event name is among what the step collected or found."""

    what: str = Field(min_length=1)
    step: str
    event: str | None = None


class PreventionSpec(_Model):
    """Which of the ten best practices (the posture checks' numbering) would have prevented
    or shortened the incident, and how."""

    practice: int = Field(ge=1, le=10)
    how: str = Field(min_length=1)


class TargetsSpec(_Model):
    """The minutes, from the exercise's start, a team should take to identify the incident
    (its first finding) and to contain it (its first containment that succeeded)."""

    identify_minutes: float = Field(gt=0)
    contain_minutes: float = Field(gt=0)
