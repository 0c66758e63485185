"""The journal's entries, one typed model per entry type: the only place their names are spelt.

A journal line is an envelope (``seq``, ``ts``, ``type``, ``step``, ``data``, ``prev``,
``hash``) whose ``data`` has the shape its ``type`` gives it. Writers build a *record* (the
``data`` model, e.g. ``StepStarted``: ``records``, importable from here) and hand it to
``journal.BundleWriter.append``, which wraps it in an envelope; ``read`` turns a parsed line
back into a typed ``Entry`` (a tagged union on ``type``) or says in one line why it cannot
(``Malformed``). Nothing but ``view.fold`` reads entries: everything else reads the
``RunView`` it makes.

The on-disk form is the one releases 0.2 and earlier wrote (``records`` says how), so old
journals read and new ones are written the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Union

import msgspec

from kmsir.evidence.entries.records import (
    Anchor,
    AnchorFailed,
    AnchorKey,
    ApiCall,
    ApiIntent,
    ApprovalGiven,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalTimedOut,
    Artifact,
    ArtifactIntent,
    BeforeChange,
    CheckMode,
    Custody,
    Decision,
    FacilitatorAction,
    Inject,
    InputChanged,
    InputFile,
    InputSkipped,
    Json,
    LockOverridden,
    Note,
    OpenRisks,
    Query,
    Recheck,
    Record,
    Repair,
    ReportWritten,
    RunFinished,
    RunInterrupted,
    RunResumed,
    RunStarted,
    StepFailed,
    StepRetry,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    TargetResult,
)

# -- envelopes -------------------------------------------------------------------------------

#: Every record type, by the entry type it is journaled as.
RECORDS: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        RunStarted,
        RunResumed,
        RunFinished,
        OpenRisks,
        RunInterrupted,
        Repair,
        LockOverridden,
        AnchorKey,
        Anchor,
        AnchorFailed,
        ReportWritten,
        ArtifactIntent,
        Artifact,
        InputFile,
        InputSkipped,
        StepStarted,
        StepSucceeded,
        StepSkipped,
        StepFailed,
        StepRetry,
        TargetResult,
        Decision,
        ApprovalRequested,
        ApprovalGiven,
        ApprovalRefused,
        ApprovalTimedOut,
        Note,
        InputChanged,
        Recheck,
        CheckMode,
        BeforeChange,
        ApiIntent,
        ApiCall,
        Query,
        Inject,
        FacilitatorAction,
    )
}


class Entry(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """One journal line: where it stands in the chain, when, for which step, and its record
    (``data``; ``data.TYPE`` is the line's ``type``). One subclass per entry type, tagged
    with it, makes the union ``read`` decodes into."""

    seq: int
    ts: str
    step: str | None
    data: Any
    prev: str | None
    hash: str

    @property
    def type(self) -> str:
        """The entry type (the record's)."""
        return str(self.data.TYPE)

    @property
    def at(self) -> datetime:
        """``ts`` as an aware datetime."""
        return datetime.fromisoformat(self.ts.replace("Z", "+00:00"))


def _envelope(model: type[Any]) -> type[Entry]:
    # an inject's data is the world's own record, kept whole as a mapping
    data = Json if model is Inject else model
    envelope: Any = msgspec.defstruct(
        f"{model.__name__}Entry",
        [("data", data)],
        bases=(Entry,),
        tag=model.TYPE,
        frozen=True,
        kw_only=True,
        module=__name__,
    )
    return envelope  # type: ignore[no-any-return]


_ENVELOPES = tuple(_envelope(model) for model in RECORDS.values())
_ANY_ENTRY: Any = Union[_ENVELOPES]  # noqa: UP007 (a runtime union of generated types)
#: The union as a struct's field: msgspec caches a struct's decoding plan, not a bare
#: union's (rebuilt on every call: 16 us a line against 0.5 us, msgspec issue #1178).
_LINE: Any = msgspec.defstruct("_Line", [("entry", _ANY_ENTRY)], module=__name__)


class Malformed(ValueError):
    """A journal line whose type is unknown or whose ``data`` has the wrong shape."""


def read(raw: Json) -> Entry:
    """A parsed, well-formed journal line as a typed ``Entry``; ``Malformed`` (one line
    naming the field) when its type is unknown or its data does not fit the type."""
    try:
        entry: Entry = msgspec.convert({"entry": raw}, _LINE).entry
    except msgspec.ValidationError as exc:
        kind = raw.get("type")
        if kind not in RECORDS:
            raise Malformed(f"unknown entry type {str(kind)[:40]!r}") from None
        problem = str(exc).replace("`$.entry", "`$")
        raise Malformed(f"not a valid {kind!r} entry: {problem}") from None
    if isinstance(entry.data, dict):
        entry = msgspec.structs.replace(entry, data=Inject(record=entry.data))
    return entry


#: What a writer hands the journal: a record, or an API call's intent or result.
Journaled = Union[Record, "ApiIntent", "ApiCall"]


def data_of(record: Journaled) -> tuple[str, Json]:
    """The entry type and the ``data`` dict a record is journaled as (datetimes and bytes are
    left for ``bundle.jsonable``, which writes them the way the journal always has)."""
    kind = type(record).TYPE
    if isinstance(record, Inject):
        return kind, dict(record.record)
    data: Json = msgspec.to_builtins(
        record, builtin_types=(datetime, bytes, bytearray), enc_hook=str
    )
    # the fields a record always carried stay, null or empty, for readers of the file
    always: tuple[str, ...] = getattr(record, "ALWAYS", ())
    if isinstance(record, Decision) and record.calls is not None:
        always = ("state", "inverse")  # an approval shows what was shown, undo or not
    for name in always:
        data.setdefault(name, msgspec.to_builtins(getattr(record, name)))
    return kind, data


__all__ = [
    "RECORDS",
    "Anchor",
    "AnchorFailed",
    "AnchorKey",
    "ApiCall",
    "ApiIntent",
    "ApprovalGiven",
    "ApprovalRefused",
    "ApprovalRequested",
    "ApprovalTimedOut",
    "Artifact",
    "ArtifactIntent",
    "BeforeChange",
    "CheckMode",
    "Custody",
    "Decision",
    "Entry",
    "FacilitatorAction",
    "Inject",
    "InputChanged",
    "InputFile",
    "InputSkipped",
    "Journaled",
    "LockOverridden",
    "Malformed",
    "Note",
    "OpenRisks",
    "Query",
    "Recheck",
    "Record",
    "Repair",
    "ReportWritten",
    "RunFinished",
    "RunInterrupted",
    "RunResumed",
    "RunStarted",
    "StepFailed",
    "StepRetry",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
    "TargetResult",
    "data_of",
    "read",
]
