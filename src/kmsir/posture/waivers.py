"""Waivers: a known failure, accepted for a reason until a date, shown as ``waived``.

A waivers file is YAML, a list (or ``waivers:`` holding a list) of entries::

    - check: rotation-enabled                 # a check id
      resource: arn:aws:kms:...:key/1234...   # one resource; "*" matches any run of characters
      reason: legacy key, replaced in Q1 (TICKET-42)
      expires: 2027-03-31                     # waives through that day

Only ``*`` is a wildcard (in ``check`` and ``resource``; ``"*"`` alone waives every
resource, an account-level failure that names none included); every other character,
``?`` and ``[`` among them, stands for itself, as ARNs are written. A waiver covers failures
only: a check that could not run is not a known failure. An expired waiver no longer waives:
the failure shows again, in an entry of its own whose detail says which waiver expired when.
A failed entry naming several resources is split when waivers cover some of them.

The file is the user's: every problem is one line naming ``file:line``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import yaml

from kmsir.posture import Check

#: Waivers in one file, at most.
MAX_WAIVERS = 10_000
#: What a reason keeps (the report and SARIF show it).
MAX_REASON = 500
_FIELDS = ("check", "resource", "reason", "expires")


@dataclass(frozen=True)
class Waiver:
    """One accepted failure."""

    check: str
    resource: str
    reason: str
    expires: date
    #: Where it was written (``file:line``), for messages.
    where: str = ""
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        both = (_glob(self.check), _glob(self.resource))
        object.__setattr__(self, "_pattern", re.compile(f"{both[0]}\x00{both[1]}", re.S))

    def covers(self, check_id: str, resource: str) -> bool:
        """Whether it waives ``check_id`` on ``resource`` (``*`` wildcards in both)."""
        return self._pattern.fullmatch(f"{check_id}\x00{resource}") is not None

    def live(self, today: date) -> bool:
        """Whether it still waives on ``today`` (the expiry day included)."""
        return today <= self.expires

    def as_json(self) -> dict[str, Any]:
        """The waiver as a waived entry of ``posture.json`` records it."""
        return {
            "check": self.check,
            "resource": self.resource,
            "reason": self.reason,
            "expires": self.expires.isoformat(),
            "where": self.where,
        }


def _glob(pattern: str) -> str:
    """A waiver's pattern as a regular expression: ``*`` any run of characters (the NUL
    separating id and resource excluded), everything else literal."""
    return "[^\x00]*".join(re.escape(part) for part in pattern.split("*"))


def load(data: bytes, source: str) -> list[Waiver]:
    """The waivers of a file's bytes; ``ValueError`` naming ``source:line`` and the fix."""
    try:
        node = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_problem(exc, source)) from None
    if node is None:
        return []
    if isinstance(node, yaml.MappingNode):
        inner = [v for k, v in node.value if getattr(k, "value", None) == "waivers"]
        if len(inner) != 1 or len(node.value) != 1:
            line = node.start_mark.line + 1
            raise ValueError(f"{source}:{line}: expected a list of waivers (or waivers: [...])")
        node = inner[0]
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []  # "waivers:" with nothing under it
    if not isinstance(node, yaml.SequenceNode):
        raise ValueError(f"{source}:{node.start_mark.line + 1}: expected a list of waivers")
    if len(node.value) > MAX_WAIVERS:
        raise ValueError(f"{source}: more than {MAX_WAIVERS:,} waivers")
    loader = yaml.SafeLoader("")
    try:
        return [_one(item, loader, source) for item in node.value]
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    """A YAML syntax error in one line, at the line it names."""
    # "while parsing a flow sequence" points to where it began, anything else to the problem
    starts = str(getattr(exc, "context", None) or "").startswith("while")
    marks = ("context_mark", "problem_mark") if starts else ("problem_mark", "context_mark")
    mark = getattr(exc, marks[0], None) or getattr(exc, marks[1], None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    said = [getattr(exc, name, None) for name in ("context", "problem")]
    problem = ": ".join(str(s) for s in said if s) or type(exc).__name__
    return f"{where}: not YAML: {' '.join(problem.split())}"


def _one(node: yaml.Node, loader: yaml.SafeLoader, source: str) -> Waiver:
    where = f"{source}:{node.start_mark.line + 1}"
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"{where}: a waiver is a mapping (check, resource, reason, expires)")
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if name not in _FIELDS:
            shown = name if isinstance(name, str) else "a non-text key"
            raise ValueError(
                f"{source}:{key_node.start_mark.line + 1}: unknown field {shown[:60]!r} "
                f"(a waiver has {', '.join(_FIELDS)})"
            )
        if not isinstance(value_node, yaml.ScalarNode):  # no lists, mappings or alias bombs
            raise ValueError(f"{source}:{value_node.start_mark.line + 1}: {name} must be text")
        try:
            values[name] = loader.construct_object(value_node)
        except (yaml.YAMLError, ValueError) as exc:  # !!python/... tags, 2027-13-01
            problem = getattr(exc, "problem", None) or exc
            line = value_node.start_mark.line + 1
            said = f"{name} {str(value_node.value)[:40]!r}: {' '.join(str(problem).split())}"
            raise ValueError(f"{source}:{line}: {said}") from None
    for name in _FIELDS:
        if values.get(name) in (None, ""):
            raise ValueError(f"{where}: {name} is missing")
    return Waiver(
        check=str(values["check"]),
        resource=str(values["resource"]),
        reason=" ".join(str(values["reason"]).split())[:MAX_REASON],
        expires=_date(values["expires"], where),
        where=where,
    )


def _date(value: Any, where: str) -> date:
    if isinstance(value, datetime):  # a date with a time compares with neither
        raise ValueError(f"{where}: expires {value.isoformat()} has a time: give a date only")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"{where}: expires {str(value)[:40]!r} is not a date (YYYY-MM-DD)"
        ) from None


def apply(checks: Iterable[Check], waivers: list[Waiver], today: date) -> list[Check]:
    """The checks with each failure a live waiver covers turned into ``waived`` (its
    ``waiver`` saying which, why and until when); a failure whose only waivers expired stays
    a failure, in an entry whose detail says so. A failed entry naming several resources is
    split: the resources no waiver covers, those of each expired waiver, those of each live
    one. Every other entry passes through unchanged."""
    out: list[Check] = []
    for check in checks:
        if check.status != "fail" or not waivers:
            out.append(check)
            continue
        plain: list[str] = []
        waived: dict[Waiver, list[str]] = {}
        expired: dict[Waiver, list[str]] = {}
        for resource in check.resources or ("",):
            found = [w for w in waivers if w.covers(check.id, resource)]
            live = [w for w in found if w.live(today)]
            if live:  # the one that lasts longest (the first written among equals)
                waived.setdefault(max(live, key=lambda w: w.expires), []).append(resource)
            elif found:  # the one that expired last
                expired.setdefault(max(found, key=lambda w: w.expires), []).append(resource)
            else:
                plain.append(resource)
        if plain:
            out.append(
                check if len(plain) == len(check.resources or ("",)) else _only(check, plain)
            )
        for waiver, resources in expired.items():
            note = f"waiver {waiver.where} expired {waiver.expires.isoformat()}: {waiver.reason}"
            out.append(_only(check, resources, detail=_joined(check.detail, note)))
        for waiver, resources in waived.items():
            note = f"waived until {waiver.expires.isoformat()}: {waiver.reason}"
            out.append(
                _only(
                    check,
                    resources,
                    status="waived",
                    waiver=waiver.as_json(),
                    detail=_joined(check.detail, note),
                )
            )
    return out


def _only(check: Check, resources: list[str], **changes: Any) -> Check:
    """``check`` on some of its resources (``""`` standing for none)."""
    return check.only([r for r in resources if r], **changes)


def _joined(detail: str, note: str) -> str:
    return f"{detail}; {note}" if detail else note
