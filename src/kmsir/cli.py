"""The ``kmsir`` command line: the only module that imports typer, prints, or picks exit codes.

Exit codes: 0 done; 1 a step failed, the responder aborted, or a bundle is tampered; 2 bad
usage or invalid input; 3 internal error; 130 interrupted. Errors are one line on stderr;
``--debug`` shows tracebacks. Heavy modules (boto3, moto, jinja2) are imported inside the
commands that need them, so ``kmsir --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import typer

from kmsir import __version__
from kmsir.errors import KmsirError, PlaybookError, UsageError

if TYPE_CHECKING:
    from kmsir.actions.aws import ClientFactory
    from kmsir.engine import RunOptions, RunResult
    from kmsir.playbook import LoadedPlaybook

EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="kmsir",
    help="Incident-response playbooks for AWS KMS, with a tamper-evident evidence bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _handled(func: F) -> F:
    """Turn every failure into one line on stderr and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except PlaybookError as exc:
            for problem in exc.problems:
                _err(problem)
            raise typer.Exit(exc.exit_code) from None
        except KmsirError as exc:
            if _state["debug"]:
                traceback.print_exc()
            _err(f"kmsir: error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("kmsir: interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _state["debug"]:
                traceback.print_exc()
            _err(
                f"kmsir: internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in kmsir: please report it with the output of the same command "
                "run with --debug."
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


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
    _state["debug"] = debug


# -- shared helpers -------------------------------------------------------------------------


def _load_playbook(reference: str) -> LoadedPlaybook:
    """A playbook by path, or a built-in one by name (``kms-key-compromise``)."""
    from kmsir import actions, playbook, resources

    path = Path(reference)
    if not path.exists() and not path.suffix:
        builtin = resources.playbooks_dir() / f"{reference}.yaml"
        if builtin.is_file():
            path = builtin
    if not path.is_file():
        raise UsageError(f"playbook {reference!r}: no such file (or built-in playbook)")
    return playbook.load(path, actions.catalog())


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-i {pair[:60]!r}: expected NAME=VALUE")
        values[name.strip()] = value
    return values


def _load_answers(path: Path | None) -> dict[str, Any]:
    from kmsir import yamlsafe

    if path is None:
        return {}
    data = yamlsafe.load_file(path).data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: an answers file maps step ids and input names to answers")
    return {str(k): v for k, v in data.items()}


class _ConsoleReporter:
    """Draws step outcomes and progress on stderr with rich."""

    _STYLE: ClassVar[dict[str, str]] = {
        "succeeded": "green",
        "already": "green",
        "failed": "bold red",
        "skipped": "yellow",
        "would-run": "cyan",
    }

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        if self.console.is_terminal:
            of = f"/{total}" if total else ""
            self.console.print(f"  {what}: {done}{of}", end="\r", markup=False)

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        from rich.text import Text

        line = Text(f"{status:>10} ", style=self._STYLE.get(status, ""))
        line.append(f"{step_id}: ", style="bold")
        line.append(summary if len(summary) < 300 else summary[:297] + "...")
        self.console.print(line)


def _finish(result: RunResult, *, fmt: str = "md") -> None:
    """Say where the bundle is, render its report, and exit 0 only if the run succeeded."""
    from kmsir import report

    _err(f"bundle: {result.bundle}")
    if result.error:
        _err(f"kmsir: run {result.status}: {result.error}")
    try:
        print(report.write(result.bundle, fmt=fmt))
    except KmsirError as exc:  # the evidence is safe; only the derived report is missing
        _err(f"kmsir: warning: no report: {exc} (retry with: kmsir report {result.bundle})")
    if result.status != "succeeded":
        raise typer.Exit(1)


def _default_incident() -> str:
    return "INC-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _evidence_dir(value: Path) -> Path:
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} exists and is not a directory")
    return value


EvidenceDir = Annotated[
    Path,
    typer.Option("--evidence-dir", help="Where bundles are written.", callback=_evidence_dir),
]


# -- commands -------------------------------------------------------------------------------


@app.command()
@_handled
def demo(
    evidence_dir: EvidenceDir = Path("evidence"),
    scenario: Annotated[str, typer.Option("--scenario", help="Sandbox scenario.")] = "rogue-grant",
) -> None:
    """Run a scenario's playbook in the sandbox with its scripted answers; print the report."""
    from kmsir.prompts import ScriptedPrompter
    from kmsir.sandbox import scenario as scenarios

    world = scenarios.load(scenario)
    loaded = _load_playbook(world.playbook)
    prompter = ScriptedPrompter(world.answers, source="scenario script")
    _err(f"kmsir demo: scenario {world.id} (SIMULATED, no AWS account): {world.story}")
    from kmsir.engine import RunOptions

    options = RunOptions(
        incident_id=f"demo-{world.id}",
        evidence_dir=evidence_dir,
        mode="sandbox",
        scenario=world.id,
        extra={"answers": {"source": "scenario script", "values": world.answers}},
    )
    _finish(_execute(loaded, {}, prompter, options, world=world, source=world.id))


def _execute(
    loaded: LoadedPlaybook,
    given: dict[str, Any],
    prompter: Any,
    options: RunOptions,
    *,
    world: Any = None,
    source: str | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> RunResult:
    """Run against the scenario's sandbox when there is one, else against AWS.

    ``source`` is where the scenario came from (a built-in name or an absolute path), kept in
    the journal so that resume can rebuild the same world."""
    from kmsir import actions, playbook
    from kmsir.engine import Engine

    if world is not None:  # the scenario's inputs are defaults for its playbook
        defaults = {k: v for k, v in world.inputs.items() if k in loaded.playbook.inputs}
        given = {**defaults, **given}
    given = _ask_missing_inputs(loaded, given, prompter)
    inputs = playbook.resolve_inputs(loaded.playbook, given)
    with contextlib.ExitStack() as stack:
        if world is not None:
            from kmsir.sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox(world))
            clients = sandbox.client_factory()
            # the clock and scenario, so that resume can rebuild this same world
            options = dataclasses.replace(
                options,
                extra={**options.extra, "sandbox": {**sandbox.record(), "source": source}},
            )
        else:
            clients = _live_clients(profile, region)
        engine = Engine(
            actions=actions.registry(),
            clients=clients,
            prompter=prompter,
            reporter=_ConsoleReporter(),
        )
        return engine.run(loaded, inputs, options)


def _live_clients(profile: str | None, region: str | None) -> ClientFactory:
    from kmsir.actions.aws import ClientFactory

    def session() -> Any:
        import boto3
        from botocore.exceptions import ProfileNotFound

        try:
            return boto3.Session(profile_name=profile, region_name=region)
        except ProfileNotFound:
            raise UsageError(f"--profile {profile}: no such AWS profile") from None

    return ClientFactory(session_factory=session, region=region)


@app.command()
@_handled
def run(
    playbook_ref: Annotated[str, typer.Argument(metavar="PLAYBOOK", help="File or built-in name.")],
    inputs: Annotated[
        list[str] | None, typer.Option("-i", "--input", metavar="NAME=VALUE", help="An input.")
    ] = None,
    incident: Annotated[str | None, typer.Option("--incident", help="Incident id.")] = None,
    evidence_dir: EvidenceDir = Path("evidence"),
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region.")] = None,
    sandbox: Annotated[
        str | None, typer.Option("--sandbox", metavar="SCENARIO", help="Run in the sandbox.")
    ] = None,
    answers: Annotated[
        Path | None, typer.Option("--answers", help="YAML: step id or input name -> answer.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every step without asking.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; show what would.")
    ] = False,
    start_at: Annotated[
        str | None, typer.Option("--start-at", help="Skip to this step (fresh runs only).")
    ] = None,
    force_start_at: Annotated[
        bool,
        typer.Option(
            "--force-start-at",
            help="Allow --start-at although an unfinished run of this playbook exists.",
        ),
    ] = False,
) -> None:
    """Run a playbook step by step, asking before anything changes."""
    from kmsir import evidence
    from kmsir.engine import RunOptions

    loaded = _load_playbook(playbook_ref)
    incident_id = evidence.check_incident_id(incident or _default_incident())
    given: dict[str, Any] = _parse_inputs(inputs or [])
    scripted = _load_answers(answers)
    for name in loaded.playbook.inputs:
        if name in scripted and name not in given:
            given[name] = scripted[name]
    prompter = _prompter(scripted, "answers file", yes=yes)
    world = None
    if sandbox:
        from kmsir.sandbox import scenario as scenarios

        world = scenarios.load(sandbox)
    options = RunOptions(
        incident_id=incident_id,
        evidence_dir=evidence_dir,
        mode="check" if check else "sandbox" if world else "live",
        yes=yes,
        start_at=start_at,
        scenario=world.id if world else None,
        extra={"answers": {"source": "answers file", "values": scripted}} if scripted else {},
    )
    if start_at is not None and not force_start_at:
        _refuse_start_at_over_unfinished(evidence_dir / incident_id, loaded, start_at)
    source = None
    if sandbox:
        source = str(Path(sandbox).resolve()) if Path(sandbox).suffix else sandbox
    _finish(
        _execute(
            loaded,
            given,
            prompter,
            options,
            world=world,
            source=source,
            profile=profile,
            region=region,
        )
    )


def _refuse_start_at_over_unfinished(
    incident_dir: Path, loaded: LoadedPlaybook, start_at: str
) -> None:
    """--start-at skips steps: on an incident with an unfinished run of the same playbook,
    that run is to be resumed (its journal knows what ran), not restarted part-way."""
    from kmsir import evidence

    if not incident_dir.is_dir():
        return
    for root in sorted(incident_dir.iterdir()):
        journal = root / evidence.JOURNAL
        if not journal.is_file():
            continue
        entries = evidence.read_journal(journal).entries
        started = next((e for e in entries if e["type"] == "run-started"), None)
        if started is None or (started["data"].get("playbook") or {}).get("id") != (
            loaded.playbook.id
        ):
            continue
        finished = evidence.finished_entry(entries)
        if finished is None or finished["data"].get("status") != "succeeded":
            raise UsageError(
                f"--start-at {start_at}: run {root} of this playbook did not finish; continue "
                f"it with `kmsir resume {root}`, or pass --force-start-at to start a new run "
                "part-way"
            )


def _ask_missing_inputs(
    loaded: LoadedPlaybook, given: dict[str, Any], prompter: Any
) -> dict[str, Any]:
    from kmsir.playbook import coerce_input

    for name, spec in loaded.playbook.inputs.items():
        if name in given or not spec.required or spec.default is not None:
            continue

        def validate(value: str, _name: str = name, _spec: Any = spec) -> str | None:
            try:
                coerce_input(_name, _spec, value)
            except UsageError as exc:
                return str(exc)
            return None

        question = f"{name} ({spec.type}): {spec.description}".rstrip(": ")
        given[name] = prompter.text(name, question, validate).value
    return given


@app.command()
@_handled
def resume(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    answers: Annotated[
        Path | None,
        typer.Option("--answers", help="YAML answers (default: those the run recorded)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every step without asking.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
) -> None:
    """Continue an interrupted or failed run in its own bundle, from its first unfinished
    step. A step that was changing something when the run stopped is re-checked against live
    state before anything is sent again; decisions already made are not asked again."""
    from kmsir import actions, evidence, playbook
    from kmsir import resume as resuming
    from kmsir.engine import Engine, RunOptions
    from kmsir.errors import TamperedError
    from kmsir.evidence import utc_now
    from kmsir.values import parse_time

    try:
        state = resuming.load(bundle)
    except TamperedError as exc:
        for problem in exc.problems:
            print(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    if state.succeeded:
        if not (bundle / evidence.MANIFEST).exists():
            # the run stopped between journaling its end and writing these derived files
            from kmsir import report

            evidence.write_manifest(bundle)
            report.write(bundle)
            _err(f"{bundle}: wrote the manifest and report the interrupted finish did not")
        _err(f"{bundle}: the run already finished (succeeded); nothing to resume")
        return
    meta = state.meta
    loaded = playbook.load(bundle / evidence.PLAYBOOK_COPY, actions.catalog())
    recorded = meta.get("answers") or {}
    scripted = _load_answers(answers) if answers else dict(recorded.get("values") or {})
    source = "answers file" if answers else str(recorded.get("source") or "answers file")
    prompter = _prompter(scripted, source, yes=yes)
    options = RunOptions(
        incident_id=str(meta.get("incident")),
        evidence_dir=bundle.resolve().parent.parent,
        mode=meta.get("mode") or "live",
        yes=yes,
        scenario=meta.get("scenario"),
    )
    _err(f"kmsir resume: {bundle} ({len(state.entries)} journal entries)")
    with contextlib.ExitStack() as stack:
        if options.scenario:
            from kmsir.sandbox import Sandbox
            from kmsir.sandbox import scenario as scenarios

            recorded_world = meta.get("sandbox") or {}
            world = scenarios.load(str(recorded_world.get("source") or options.scenario))
            clock = recorded_world.get("now")
            sandbox = Sandbox(world, now=parse_time(clock, utc_now()) if clock else None)
            if recorded_world.get("scenario_sha256") != sandbox.fingerprint:
                raise UsageError(
                    f"scenario {world.id} changed since this run started; its sandbox world "
                    "cannot be rebuilt, so the run cannot be resumed"
                )
            stack.enter_context(sandbox)
            replayed = sandbox.replay(state.entries)
            _err(f"sandbox: rebuilt scenario {world.id}, replayed {replayed['replayed']} call(s)")
            clients = sandbox.client_factory()
            options = dataclasses.replace(options, extra={"sandbox_replay": replayed})
        else:
            clients = _live_clients(profile, meta.get("region"))
        engine = Engine(
            actions=actions.registry(),
            clients=clients,
            prompter=prompter,
            reporter=_ConsoleReporter(),
        )
        result = engine.resume(loaded, state, options)
    _finish(result)


def _prompter(scripted: dict[str, Any], source: str, *, yes: bool) -> Any:
    """Scripted answers first, then the terminal (or a refusal without one)."""
    from kmsir.prompts import AutoApprovePrompter, InteractivePrompter, NoPrompter, ScriptedPrompter

    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    base: Any = InteractivePrompter(show=_err) if interactive else NoPrompter()
    prompter: Any = ScriptedPrompter(scripted, source=source, fallback=base)
    return AutoApprovePrompter(prompter) if yes else prompter


@app.command()
@_handled
def validate(
    playbooks: Annotated[list[Path], typer.Argument(metavar="PLAYBOOK...", help="Files to check.")],
) -> None:
    """Validate playbooks without any AWS call (exit 0 valid, 2 invalid)."""
    from kmsir import actions, playbook

    catalog = actions.catalog()
    invalid = 0
    for path in playbooks:
        try:
            loaded = playbook.load(path, catalog)
        except PlaybookError as exc:
            invalid += 1
            for problem in exc.problems:
                _err(problem)
            continue
        for warning in loaded.warnings:
            _err(warning)
        print(f"{path}: valid ({len(loaded.playbook.steps)} steps)")
    if invalid:
        raise typer.Exit(2)


@app.command()
@_handled
def verify(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
) -> None:
    """Check every hash, the journal chain and the manifest (exit 0 intact, 1 tampered).

    BUNDLE may also be an exported FILE.tar.gz: its .sha256 and .sig.json beside it are
    checked, then the bundle inside."""
    from kmsir import evidence, integrity

    if bundle.is_file() and bundle.name.endswith(".tar.gz"):
        _verify_archive(bundle)
        return
    checked = integrity.check(bundle)
    if checked.problems:
        for problem in checked.problems:
            print(f"TAMPERED: {problem}")
        raise typer.Exit(1)
    opened = evidence.Bundle.open(bundle)
    print(
        f"intact: {len(opened.entries)} journal entries, "
        f"{len(opened.manifest.get('artifacts', []))} artifacts, "
        f"head {opened.entries[-1]['hash'] if opened.entries else '-'}"
    )
    for note in checked.notes:
        print(f"note: {note}")
    if not checked.finished:
        print(
            "note: the run did not finish (kmsir resume continues it), so no manifest anchors "
            "the journal's last entry: lines removed from its end would not show"
        )


def _verify_archive(archive: Path) -> None:
    import json
    import tarfile
    import tempfile

    from kmsir import evidence, integrity
    from kmsir import export as exporting

    digest = evidence.sha256_hex(archive.read_bytes())
    problems = []
    sidecar = archive.with_name(archive.name + ".sha256")
    if sidecar.is_file() and sidecar.read_text().split()[:1] != [digest]:
        problems.append(f"{archive.name}: sha256 differs from {sidecar.name}")
    signed = archive.with_name(archive.name + ".sig.json")
    if signed.is_file():
        try:
            problem = exporting.check_signature(json.loads(signed.read_text()), digest)
        except ValueError:
            problem = "not valid JSON"
        if problem:
            problems.append(f"{signed.name}: {problem}")
        else:
            print(f"signature: valid ({json.loads(signed.read_text())['key_arn']})")
    entries: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="kmsir-verify-") as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{archive.name}: cannot be read as an archive ({exc})")
        else:
            roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(roots) != 1:
                raise UsageError(f"{archive}: not a kmsir export (expected one bundle folder)")
            problems += integrity.verify(roots[0])
            entries = evidence.Bundle.open(roots[0]).entries
    if problems:
        for problem in problems:
            print(f"TAMPERED: {problem}")
        raise typer.Exit(1)
    print(f"intact: {archive.name} (sha256 {digest}), {len(entries)} journal entries")


@app.command()
@_handled
def report(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    fmt: Annotated[str, typer.Option("--format", help="md")] = "md",
    template: Annotated[Path | None, typer.Option("--template", help="Your own template.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here, not in the bundle.")
    ] = None,
) -> None:
    """Re-render a bundle's report from the bundle alone (no AWS access)."""
    from kmsir import report as reports

    print(reports.write(bundle, fmt=fmt, template=template, out=out))


@app.command()
@_handled
def export(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    out: Annotated[Path, typer.Option("--out", help="The archive (FILE.tar.gz).")],
    sign_key: Annotated[
        str | None, typer.Option("--sign-key", help="KMS asymmetric signing key (id/ARN/alias).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile (signing).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (signing).")] = None,
) -> None:
    """Write a deterministic .tar.gz of an intact bundle, its .sha256 and (with --sign-key) a
    detached KMS signature (.sig.json) that verify checks offline."""
    import json

    from kmsir import export as exporting
    from kmsir.actions.aws import aws_errors
    from kmsir.errors import TamperedError

    try:
        path, digest = exporting.export(bundle, out)
    except TamperedError as exc:
        for problem in exc.problems:
            print(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    print(f"{digest}  {path}")
    if sign_key:
        kms = _live_clients(profile, region).client("kms")
        with aws_errors(f"DescribeKey on {sign_key}"):
            metadata = kms.describe_key(KeyId=sign_key)["KeyMetadata"]
        algorithm = exporting.SIGNING_ALGORITHMS.get(str(metadata.get("KeySpec")))
        if metadata.get("KeyUsage") != "SIGN_VERIFY" or algorithm is None:
            raise UsageError(f"--sign-key {sign_key}: not an RSA or ECC key for SIGN_VERIFY")
        with aws_errors(f"Sign with {sign_key}"):
            signature = kms.sign(
                KeyId=metadata["KeyId"],
                Message=bytes.fromhex(digest),
                MessageType="RAW",
                SigningAlgorithm=algorithm,
            )["Signature"]
            public = kms.get_public_key(KeyId=metadata["KeyId"])["PublicKey"]
        record = exporting.signature_record(metadata["Arn"], algorithm, digest, signature, public)
        signed = path.with_name(path.name + ".sig.json")
        _write_out(signed, json.dumps(record, indent=2) + "\n")
        print(f"signed with {metadata['Arn']}: {signed}")


@app.command("actions")
@_handled
def list_actions() -> None:
    """List the actions a playbook can use."""
    from kmsir import actions

    for name, action in sorted(actions.registry().items()):
        kind = "mutating" if action.mutating else "read-only"
        undo = f", undo: {action.inverse}" if action.inverse else ""
        doc = (action.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<22} {kind}{undo}\n    {doc}")


@app.command()
@_handled
def scenarios() -> None:
    """List the sandbox scenarios."""
    from kmsir.sandbox import scenario

    for name in scenario.available():
        world = scenario.load(name)
        print(f"{name:<24} {world.story}")


cloudtrail_app = typer.Typer(
    help="CloudTrail evidence without a playbook.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cloudtrail_app, name="cloudtrail")


@cloudtrail_app.command("scan")
@_handled
def cloudtrail_scan(
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH...", help="Trail files, folders or s3://bucket/prefix."),
    ],
    key: Annotated[str, typer.Option("--key", help="Key id or key ARN.")],
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="An alias of the key (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time or duration ago.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time or duration ago.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Matched events (JSON Lines).")] = None,
    findings_out: Annotated[
        Path | None, typer.Option("--findings-out", help="Findings (JSON array).")
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Incident window before the last event.")
    ] = "24h",
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile (s3://).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (s3://).")] = None,
) -> None:
    """Match trail log files against a key and report findings (no window unless given)."""
    import json
    from datetime import timedelta

    from kmsir.trail import files
    from kmsir.trail.events import order_raw, slim
    from kmsir.trail.findings import context_for, event_time, findings
    from kmsir.trail.match import KeyMatcher
    from kmsir.values import duration_seconds, is_kms_key_reference, parse_time

    if not is_kms_key_reference(key) or key.startswith("alias/") or ":alias/" in key:
        raise UsageError(f"--key {key[:80]!r}: give a key id or key ARN (aliases go in --alias)")
    buckets = [p for p in paths if p.startswith("s3://")]
    local = [Path(p) for p in paths if not p.startswith("s3://")]
    missing = [str(p) for p in local if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {missing[0]}")
    now = datetime.now(timezone.utc)
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
        window_seconds = duration_seconds(window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if start and end and start >= end:
        raise UsageError(f"--since {since} is not before --until {until}")
    if out is not None:
        _write_out(out, "")  # fail now, not after a long scan
    matcher = KeyMatcher.for_key(key, alias or [])
    raw, stats = files.scan(local, matcher, since=start, until=end)
    for uri in buckets:
        from kmsir.actions.base import NullReporter
        from kmsir.actions.trail_s3 import scan_bucket

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        from_bucket, more = scan_bucket(
            _live_clients(profile, region),
            NullReporter(),
            bucket,
            prefix,
            None,
            matcher,
            start,
            end,
        )
        raw.extend(from_bucket)
        stats.add(more)
    ordered = order_raw(raw)  # raw bytes out, unchanged; only the findings fields decoded
    del raw
    _write_lines(out, ordered)
    events = [slim(r) for r in ordered]
    del ordered
    times = [t for t in (event_time(e) for e in events) if t is not None]
    window_start = max(times) - timedelta(seconds=window_seconds) if times else None
    key_arn = key if key.startswith("arn:") else None
    found = findings(events, context_for(events, key_arn, window_start))
    if findings_out is not None:
        _write_out(findings_out, json.dumps([f.to_json() for f in found], indent=2) + "\n")
    _scan_summary(stats, len(events), found)


def _write_lines(out: Path | None, records: list[bytes]) -> None:
    """Matched events, one a line, to ``out`` or stdout, without building one big string."""
    try:
        handle = sys.stdout.buffer if out is None else out.open("wb")
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    try:
        for record in records:
            handle.write(record)
            handle.write(b"\n")
        handle.flush()
    except BrokenPipeError:  # `| head`: the reader had enough; findings are still written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        if out is not None:
            handle.close()


def _write_out(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _scan_summary(stats: Any, matched: int, found: list[Any]) -> None:
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    table = Table(title="kmsir cloudtrail scan", show_header=False)
    table.add_row("files", f"{stats.files:,}")
    table.add_row(
        "JSON read",
        f"{stats.json_bytes / 2**20:,.1f} MiB ({stats.compressed_bytes / 2**20:,.1f} MiB on disk)",
    )
    table.add_row("records", f"{stats.records:,}")
    table.add_row("matching events", f"{matched:,}")
    for reason, count in sorted(stats.skipped.items()):
        table.add_row("skipped", f"{count:,}: {reason}")
    severities = Counter(f.severity for f in found)
    table.add_row("findings", ", ".join(f"{n} {s}" for s, n in severities.most_common()) or "none")
    console = Console(stderr=True, highlight=False)
    console.print(table)
    for problem in stats.problems[:5]:
        console.print(f"  skipped: {problem}", markup=False)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
