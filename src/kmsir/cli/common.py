"""What every command shares: the typer app, error handling and exit codes, loading playbooks
and answers, the console reporter, AWS clients for live runs.

Exit codes: 0 done; 1 a step failed, the responder aborted, or a bundle is tampered; 2 bad
usage or invalid input; 3 internal error; 4 ``verify``: consistent, but its end cannot be
proven; 130 interrupted. Errors are one line on stderr;
``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from kmsir import __version__
from kmsir.errors import KmsirError, PlaybookError, UsageError
from kmsir.inert import one_line, visible

if TYPE_CHECKING:
    from kmsir.aws import ClientFactory
    from kmsir.playbook.model import LoadedPlaybook
    from kmsir.run.engine import RunResult

EXIT_INTERNAL = 3
#: ``verify``: consistent, but the end of an unfinished, unanchored run cannot be proven.
EXIT_UNPROVEN = 4
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE, what a shell reports for a tool whose reader went away.
EXIT_BROKEN_PIPE = 141


class _OneLineErrors(TyperGroup):
    """The command group: Click's usage errors (a missing argument, an invalid option value)
    become the same one ``kmsir: error: ...`` line as every other error, exit 2."""

    def list_commands(self, ctx: Any) -> list[str]:
        from kmsir.cli import helptext

        return helptext.order(list(super().list_commands(ctx)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from kmsir.cli import helptext

        command = super().get_command(ctx, cmd_name)
        if command is None:
            return None
        for name, sub in (getattr(command, "commands", None) or {}).items():
            helptext.readable(sub, name)  # a group's commands (sandbox serve, cloudtrail scan)
        return helptext.readable(command, cmd_name)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        # the Click that typer uses (its own copy in recent versions), by a public name
        click = sys.modules[typer.BadParameter.__module__]
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.NoArgsIsHelpError as exc:
            exc.show()  # the help itself, as asked
            code = exc.exit_code
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "kmsir"
            message = " ".join(exc.format_message().split())
            err(f"kmsir: error: {message} (see {command} --help)")
            code = exc.exit_code
        except click.Abort:
            err("kmsir: aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="kmsir",
    help="Incident-response playbooks for AWS KMS, with a tamper-evident evidence bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
#: This invocation's: --debug, and the running bundle with how to resume it (once it exists).
_state: dict[str, Any] = {"debug": False, "bundle": None, "resume": None}

F = TypeVar("F", bound=Callable[..., Any])


def err(message: str) -> None:
    """One line on stderr, its control characters and line breaks shown as escapes (it may
    quote input)."""
    print(one_line(message), file=sys.stderr)


def say(message: str) -> None:
    """One message on stdout, its control characters shown as escapes (it may quote input)."""
    print(visible(message))


def _end_display() -> None:
    """Stop a progress display left running (Ctrl-C or an error during long work), so the
    terminal gets its cursor back."""
    console = sys.modules.get("kmsir.cli.console")
    if console is not None:
        console.pause_progress()


def handled(func: F) -> F:
    """Turn every failure into one line on stderr and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except PlaybookError as exc:
            _end_display()
            for problem in exc.problems:
                err(problem)
            raise typer.Exit(exc.exit_code) from None
        except KmsirError as exc:
            _end_display()
            if _state["debug"]:
                traceback.print_exc()
            err(f"kmsir: error: {exc}{how_to_continue()}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _end_display()
            err(f"kmsir: interrupted{how_to_continue()}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # the reader of stdout went away (`kmsir scenarios | head`): stop quietly, as
            # other tools do; what is left unflushed goes nowhere instead of failing at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:
            _end_display()
            if _state["debug"]:
                traceback.print_exc()
            err(
                f"kmsir: internal error: {type(exc).__name__}: {exc} (a bug in kmsir: please "
                f"report it with the output of the same command run with --debug)"
                f"{how_to_continue()}"
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def started(bundle: Path, resume: str) -> None:
    """A run's bundle exists: say where, and remember how to continue the run should it stop
    (Ctrl-C, an error, a failed step, an abort)."""
    _state["bundle"], _state["resume"] = bundle, resume
    err(f"bundle: {bundle}")


def how_to_continue() -> str:
    """After a run stopped, to end its one line: where its evidence is and the exact command
    that continues it (empty when no bundle was made)."""
    if _state["bundle"] is None:
        return ""
    return f"; the evidence is kept in {_state['bundle']}; continue with: {_state['resume']}"


def resume_command(
    bundle: Path, *, profile: str | None = None, answers: Path | None = None, yes: bool = False
) -> str:
    """``kmsir resume BUNDLE`` with what the run needs to go on as it was started."""
    parts = ["kmsir", "resume", str(bundle.resolve())]
    if profile:
        parts += ["--profile", profile]
    if answers is not None:
        parts += ["--answers", str(answers.resolve())]
    if yes:
        parts.append("--yes")
    return shlex.join(parts)


def _version(value: bool) -> None:
    if value:
        print(f"kmsir {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    _state.update(debug=debug, bundle=None, resume=None)


# -- shared helpers -------------------------------------------------------------------------


def load_playbook(reference: str) -> LoadedPlaybook:
    """A playbook by path, or a built-in one by name (``kms-key-compromise``)."""
    from kmsir import actions, resources
    from kmsir.playbook import model as playbook

    path = Path(reference)
    if not path.exists() and not path.suffix:
        builtin = resources.playbooks_dir() / f"{reference}.yaml"
        if builtin.is_file():
            path = builtin
    if not path.is_file():
        raise UsageError(f"playbook {reference!r}: no such file (or built-in playbook)")
    return playbook.load(path, actions.catalog())


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-i {pair[:60]!r}: expected NAME=VALUE")
        values[name.strip()] = value
    return values


def load_answers(path: Path | None) -> dict[str, Any]:
    from kmsir.playbook import yamlsafe

    if path is None:
        return {}
    data = yamlsafe.load_file(path).data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: an answers file maps step ids and input names to answers")
    return {str(k): v for k, v in data.items()}


def finish(result: RunResult) -> None:
    """Say where the bundle is, render its reports (the Markdown path goes to stdout, the
    HTML page's to stderr), and exit 0 only if the run succeeded."""
    from kmsir.cli.console import summary_table

    summary_table(result)
    err(f"bundle: {result.bundle}")
    written = write_reports(result.bundle)
    if written:
        say(str(written[0]))
        err(f"report (HTML): {written[1]}")
    if result.status != "succeeded":
        err(f"kmsir: run {result.status}: {result.error}{how_to_continue()}")
        raise typer.Exit(1)


def write_reports(bundle: Path) -> list[Path]:
    """Render a bundle's Markdown and HTML reports into it; on failure say so and go on (the
    evidence is complete without these derived files): an empty list then."""
    from kmsir import report

    try:
        return [report.write(bundle, fmt="md"), report.write(bundle, fmt="html")]
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
        err(f"kmsir: warning: no report: {exc} (retry with: kmsir report {bundle})")
        return []


def default_incident() -> str:
    return "INC-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _evidence_dir(value: Path) -> Path:
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} exists and is not a directory")
    return value


EvidenceDir = Annotated[
    Path,
    typer.Option("--evidence-dir", help="Where bundles are written.", callback=_evidence_dir),
]
PlaybookRef = Annotated[str, typer.Argument(metavar="PLAYBOOK", help="File or built-in name.")]
InputPairs = Annotated[
    list[str] | None, typer.Option("-i", "--input", metavar="NAME=VALUE", help="An input.")
]


# -- commands -------------------------------------------------------------------------------


def live_clients(profile: str | None, region: str | None) -> ClientFactory:
    """Clients for AWS with ``--profile`` and ``--region``."""
    from kmsir.aws import ClientFactory

    return ClientFactory.live(profile, region)


def prompter_for(scripted: dict[str, Any], source: str, *, yes: bool) -> Any:
    """Scripted answers first, then the terminal (or a refusal without one)."""
    from kmsir.cli.console import pause_progress, show_preview
    from kmsir.cli.interactive import InteractivePrompter
    from kmsir.prompts import AutoApprovePrompter, NoPrompter, ScriptedPrompter

    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    base: Any = (
        InteractivePrompter(show=err, show_preview=show_preview, before_prompt=pause_progress)
        if interactive
        else NoPrompter()
    )
    prompter: Any = ScriptedPrompter(scripted, source=source, fallback=base)
    return AutoApprovePrompter(prompter) if yes else prompter


def write_out(path: Path, text: str) -> None:
    """Write ``text`` to a file the user named; one line naming it when that fails."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
