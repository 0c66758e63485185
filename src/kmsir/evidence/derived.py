"""The derived files a bundle may hold besides the manifest: the reports, and what an
interrupted write of any derived file left.

A report written into a bundle is recorded in the journal first (``report-written``: its
sha256, the kmsir version, the template's sha256), from a temporary that is then put in place,
so ``verify`` tells it from an altered one; ``settle_derived`` puts a recorded report left in
its temporary in place, and removes every other temporary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence.bundle import (
    JOURNAL,
    REPORTS,
    derived_temporary,
    fsync_dir,
    read_journal,
    sha256_hex,
)
from kmsir.evidence.entries import ReportWritten
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.manifest import write_manifest
from kmsir.evidence.view import RunView


def settle_derived(root: Path, view: RunView) -> None:
    """Tidy what an interrupted write of a derived file left: a report recorded in the
    journal whose bytes are still in their temporary is put in place (the temporary is its
    only copy); every other temporary of a derived file is removed."""
    from kmsir.evidence.leftovers import derived_temporaries

    for temporary, name in derived_temporaries(root).items():
        target = root / name
        wanted = view.reports[name].record.sha256 if name in view.reports else None
        current = sha256_hex(target.read_bytes()) if target.is_file() else None
        if (
            wanted is not None
            and current != wanted
            and sha256_hex(temporary.read_bytes()) == wanted
        ):
            os.replace(temporary, target)
        else:
            temporary.unlink()
    fsync_dir(root)


def record_report(root: Path, name: str, data: bytes, details: dict[str, Any]) -> Path:
    """Write report ``name`` into the bundle and journal it (sha256, size, ``details``: the
    kmsir version and template), so that ``verify`` can tell it from an altered one.

    The bytes go to a temporary first, then the entry, then the file into place; a finished
    run's manifest is rewritten to anchor the new head."""
    if name not in REPORTS:
        raise EvidenceError(f"{name} is not a report of a bundle")
    target = root / name
    try:
        writer = BundleWriter.attach(root)
    except EvidenceError as exc:
        raise EvidenceError(f"{exc} (or write the report elsewhere with --out FILE)") from None
    try:
        temp = derived_temporary(target, data)
        try:
            writer.append(
                ReportWritten(path=name, sha256=sha256_hex(data), bytes=len(data), **details)
            )
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        os.replace(temp, target)
        fsync_dir(root)
    except OSError as exc:
        raise EvidenceError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        writer.close()
    if read_journal(root / JOURNAL).view().finished is not None:
        write_manifest(root)
    return target
