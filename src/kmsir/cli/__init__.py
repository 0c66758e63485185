"""The ``kmsir`` command line: the only package that imports typer, prints, or picks exit codes.

Commands live by theme (``runs``, ``bundles``, ``trail``) and register on the one typer app of
``common``. Heavy modules (boto3, moto, jinja2) are imported inside the commands that need them,
so ``kmsir --help`` stays fast.
"""

from __future__ import annotations

import os

from kmsir.cli import bundles, runs, sandbox, trail
from kmsir.cli.common import app

__all__ = ["app", "bundles", "main", "runs", "sandbox", "trail"]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
