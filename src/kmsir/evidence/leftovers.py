"""Files in a bundle the journal does not record, and which of them an interrupted run
explains (a file written but not yet journaled, a temporary, a torn line saved by a resume)
rather than someone planting them. ``verify`` notes the explained ones and reports the rest;
``resume`` records the explained ones in a ``repair`` entry so the bundle is clean again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsir.evidence.bundle import (
    DERIVED,
    JOURNAL,
    PLAYBOOK_COPY,
    QUARANTINE,
    NotRegular,
    read_regular,
    sha256_hex,
)
from kmsir.evidence.stepview import Seen
from kmsir.evidence.view import RunView

#: ``write_new``/``replace_derived`` temporary names: ``.tmp-<final name>-<8 hex>``.
_TEMP = re.compile(r"^\.tmp-(?P<name>.+)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Leftover:
    """A file an interrupted run left behind unjournaled, and why it is not tampering."""

    path: str
    sha256: str
    bytes: int
    reason: str


def _recorded(seen: list[Seen]) -> dict[str, Seen]:
    """Artifacts (or their intents) by path: the last record of each."""
    return {str(s.record.path): s for s in seen}


def repaired(view: RunView) -> dict[str, dict[str, Any]]:
    """Files a resume recorded: leftovers and the quarantined torn line."""
    found: dict[str, dict[str, Any]] = {}
    for repair in view.repairs:
        for item in repair.record.leftovers or []:
            found[str(item.get("path"))] = item
        torn = repair.record.torn_tail
        if isinstance(torn, dict):
            found[str(torn.get("saved_as"))] = torn
    return found


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or relative in DERIVED or relative in (JOURNAL, PLAYBOOK_COPY):
            continue
        yield relative, path


def leftovers(root: Path, view: RunView) -> tuple[list[Leftover], list[str]]:
    """Unjournaled files an interrupted run explains, and every other unjournaled file.

    Explained, only while the run is unfinished (a finished run was never interrupted after
    its last write, or its resume recorded what it found): an artifact whose intent was
    journaled with the same hash but whose write was not, a temporary file holding no more
    than an intended artifact's bytes (a prefix of them once written), a torn journal line an
    interrupted resume saved to ``quarantine/``. A derived file's temporary (manifest, report)
    is explained always: it is never evidence and never exported.
    """
    artifacts = _recorded(view.artifacts)
    intents = _recorded(view.artifact_intents)
    recorded_by_resume = repaired(view)
    unfinished = view.finished is None
    explained: list[Leftover] = []
    unexplained: list[str] = []
    for relative, path in _files(root):
        if relative in artifacts or relative in recorded_by_resume:
            continue
        try:
            content = read_regular(path)
        except NotRegular:
            unexplained.append(relative)
            continue
        reason = _why_left(root, relative, content, intents, view.lines, unfinished)
        if reason is None:
            unexplained.append(relative)
        else:
            explained.append(Leftover(relative, sha256_hex(content), len(content), reason))
    return explained, unexplained


def derived_temporaries(root: Path) -> dict[Path, str]:
    """Temporary files of the manifest or a report that a crash left at the bundle's top,
    each with the name of the derived file it was written for."""
    return {
        p: temp["name"]
        for p in root.iterdir()
        if (temp := _TEMP.fullmatch(p.name)) is not None and temp["name"] in DERIVED
    }


def _why_left(
    root: Path,
    relative: str,
    content: bytes,
    intents: dict[str, Seen],
    entries: int,
    unfinished: bool,
) -> str | None:
    folder, _, name = relative.rpartition("/")
    temp = _TEMP.fullmatch(name)
    if temp is not None and not folder and temp["name"] in DERIVED:
        return f"temporary file of {temp['name']} (derived), left when the run stopped"
    if not unfinished:
        return None
    intent = intents.get(relative)
    if intent is not None:
        if intent.record.sha256 != sha256_hex(content):
            return None
        return f"written but not journaled when the run stopped (intent at line {intent.seq})"
    final = f"{folder}/{temp['name']}" if temp is not None else relative
    if temp is not None and final in intents:
        written = root / final
        complete = read_regular(written) if written.is_file() else None
        if complete is not None and not complete.startswith(content):
            return None
        if len(content) > intents[final].record.bytes:
            return None
        return f"temporary file of {final}, left when the run stopped"
    torn = re.fullmatch(rf"{QUARANTINE}/journal-line-(\d+)\.torn", final)
    if torn is not None and int(torn[1]) == entries + 1 and b"\n" not in content:
        return "torn journal line saved by a resume that stopped before recording it"
    return None
