"""The ``kmsir`` command line: the only package that imports typer, prints, or picks exit codes.

Commands live by theme (``bundles``, ``runs``, ``playbooks``, ``sandbox``, ``trail``) and
register on the one typer app of ``common``, in the order ``kmsir --help`` lists them. Heavy
modules (boto3, moto, jinja2) are imported inside the commands that need them, so
``kmsir --help`` stays fast.
"""

from __future__ import annotations

# registering a command lists it: the order of these imports is the order of --help
from kmsir.cli import bundles, runs  # isort: skip
from kmsir.cli import rollback  # isort: skip
from kmsir.cli import status  # isort: skip
from kmsir.cli import approve  # isort: skip
from kmsir.cli import audit  # isort: skip
from kmsir.cli import playbooks, sandbox, trail, trail_verify  # isort: skip
from kmsir.cli import tabletop, tabletop_watch, tabletop_debrief  # isort: skip
from kmsir.cli import authoring  # isort: skip
from kmsir.cli.common import app

__all__ = [
    "app",
    "approve",
    "audit",
    "authoring",
    "bundles",
    "main",
    "playbooks",
    "rollback",
    "runs",
    "sandbox",
    "status",
    "tabletop",
    "tabletop_debrief",
    "tabletop_watch",
    "trail",
    "trail_verify",
]


def main() -> None:
    """Console-script entry point."""
    app()
