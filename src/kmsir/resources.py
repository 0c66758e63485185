"""Where the shipped playbooks and templates are, in a wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # In a wheel they are packed as kmsir/_data/<name>; in a checkout (editable install,
    # tests) they are the top-level folders beside src/.
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kmsir's {name}/ folder is missing from this installation")


def playbooks_dir() -> Path:
    """The built-in playbooks (and ``scenarios/`` inside it)."""
    return _find("playbooks")


def templates_dir() -> Path:
    """The built-in report templates."""
    return _find("templates")
