"""The kmsir command line called in process (typer's CliRunner): what a user would see on
stdout and stderr and the exit code, without the cost of starting Python for each command.

Use a subprocess only where the process is the point (a crash, a signal, a terminal, the
installed script, import time).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from kmsir.cli import app, console


@dataclass(frozen=True)
class Ran:
    """One command's outcome."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


@contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Ran:
    """Run ``kmsir ARGS...`` in this process; never raises for a failing command."""
    runner = CliRunner()
    # each command draws on a console of its own, as a new process would: the one console
    # of kmsir.cli.console reads COLUMNS when it is made (a narrow test must not narrow
    # the next test's tables)
    console._console.clear()
    with _cwd(cwd):
        result = runner.invoke(
            app,
            [str(a) for a in args],
            input=stdin,
            env={"COLUMNS": "200", **(env or {})},
            catch_exceptions=False,
        )
    return Ran(result.exit_code, result.stdout, result.stderr)
