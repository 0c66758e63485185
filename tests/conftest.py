"""Shared fixtures: AWS is always moto with dummy credentials, never a real account."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.aws import ClientFactory
from kmsir.playbook import model as playbook
from kmsir.prompts import Prompter, ScriptedPrompter
from kmsir.run.engine import AfterStep, Engine, RunOptions, RunResult
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "playbooks"


def pytest_configure(config: pytest.Config) -> None:
    """Collect garbage less often in the test processes: moto's backends and botocore's
    models make a long-lived heap of half a million objects that each full collection walks
    again (over a minute and a half per worker with Python's defaults). The template budget
    does not count collections, so this changes no outcome, only the suite's time."""
    import gc

    gc.set_threshold(50_000, 20, 100)
    _build_each_cli_once()
    _ctrl_c_reaches_children()


def _ctrl_c_reaches_children() -> None:
    """Ctrl-C reaches the runs and servers the tests start, however pytest was started: a
    shell starts a background job (``pytest &``) with SIGINT ignored, which every child would
    inherit, and the tests that stop a run or a server with Ctrl-C would then wait forever."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _build_each_cli_once() -> None:
    """typer's ``CliRunner.invoke`` builds the click command from the typer app on every call
    (type hints and signatures of every command's parameters: about 20 ms, more than most
    commands' own work, and ten times that under tracemalloc), and the tests run thousands of
    commands in process. Build each app's once, as one process running many commands would:
    click commands are made to be invoked again, and kmsir's touches to them (``helptext``)
    are made once. A typer without that helper builds them each time, as before."""
    import functools

    import typer.testing

    build = getattr(typer.testing, "_get_command", None)
    if build is not None and not hasattr(build, "cache_info"):
        typer.testing._get_command = functools.cache(build)  # type: ignore[attr-defined]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: half as many workers again as CPUs. Many tests wait on a subprocess (a
    run killed and resumed, a terminal, a loopback server) with the CPU idle; one more
    worker on a two-core machine keeps both cores busy."""
    import os

    return max(2, (os.cpu_count() or 1) * 3 // 2)


@pytest.fixture(autouse=True)
def _dummy_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may find real credentials, profiles or endpoints."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # as the sandbox does: no thousand public AMIs (and their snapshots) per Region's EC2
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture(autouse=True)
def _symmetric_keys_share_one_rsa_key() -> None:
    """moto makes a 2048-bit RSA key pair for every KMS key, symmetric and HMAC keys too,
    which never use it (30 to 60 ms of CPU a key: a tenth of an in-process scenario's run).
    In the test processes those keys share one, as ``tests/faultkit.py`` does; asymmetric
    keys keep their own. Speed only: it changes no answer. Applied from the first test after
    moto's KMS is imported (importing it here would slow every test that never uses it)."""
    import sys

    models = sys.modules.get("moto.kms.models")
    if models is None or getattr(models.generate_private_key, "shares_unused_keys", False):
        return
    generate = models.generate_private_key
    unused: dict[str, Any] = {}

    def generate_private_key(key_spec: str) -> Any:
        if key_spec != "SYMMETRIC_DEFAULT" and not key_spec.startswith("HMAC_"):
            return generate(key_spec)
        if key_spec not in unused:
            unused[key_spec] = generate(key_spec)
        return unused[key_spec]

    generate_private_key.shares_unused_keys = True  # type: ignore[attr-defined]
    models.generate_private_key = generate_private_key


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs keep AWS's quotas on a schedule that never waits: moto has none, and
    2 LookupEvents a second made every scenario's history pull seconds of idle time. Pacing
    itself is tested on its own clock (tests/test_aws.py); runs in a subprocess still wait."""
    from kmsir.aws.pacing import QUOTAS, Pacing

    monkeypatch.setattr("kmsir.aws.pacing.PACING", Pacing(QUOTAS, sleep=lambda _: None))


@pytest.fixture
def rogue_grant() -> Iterator[Sandbox]:
    """The rogue-grant scenario, seeded in an in-process moto sandbox."""
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        yield sandbox


@pytest.fixture
def moto_clients() -> Iterator[ClientFactory]:
    """A plain moto account (no scenario) and a client factory for it."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1"),
            region="eu-west-1",
            guard_send=True,
        )


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Every socket connect outside 127.0.0.1 refused and recorded (``netguard.NetGuard``):
    nothing may reach out, sandbox or not."""
    from .netguard import guarded

    with guarded(monkeypatch) as guard:
        yield guard


def bundles(incident_dir: Path) -> list[Path]:
    """The run bundles of an incident (not its lock file)."""
    return sorted(p for p in incident_dir.iterdir() if p.is_dir())


def load_playbook(path: Path) -> playbook.LoadedPlaybook:
    return playbook.load(path, actions.catalog())


def run_playbook(
    loaded: playbook.LoadedPlaybook,
    clients: ClientFactory,
    evidence_dir: Path,
    *,
    inputs: dict[str, Any] | None = None,
    answers: dict[str, Any] | None = None,
    prompter: Prompter | None = None,
    mode: str = "sandbox",
    yes: bool = False,
    registry: actions.Registry | None = None,
    scenario: str | None = None,
    after_step: AfterStep | None = None,
) -> RunResult:
    engine = Engine(
        actions=registry or actions.registry(),
        clients=clients,
        prompter=prompter or ScriptedPrompter(answers or {}, source="test answers"),
        sleep=lambda _: None,
        after_step=after_step,
    )
    values = playbook.resolve_inputs(loaded.playbook, inputs or {})
    options = RunOptions(
        incident_id="INC-test",
        evidence_dir=evidence_dir,
        mode=mode,  # type: ignore[arg-type]
        yes=yes,
        scenario=scenario,
    )
    return engine.run(loaded, values, options)


@contextlib.contextmanager
def played(
    scenario: str, evidence_dir: Path, *, answers: dict[str, Any] | None = None
) -> Iterator[tuple[Sandbox, RunResult]]:
    """A scenario's playbook run in its sandbox with its scripted answers (as `kmsir demo`
    does it; ``answers`` replace some of them); the sandbox stays up inside the block for
    the caller to inspect."""
    world = scenarios.load(scenario)
    with Sandbox(world) as sandbox:
        result = run_playbook(
            load_playbook(PLAYBOOKS / f"{world.playbook}.yaml"),
            sandbox.client_factory(),
            evidence_dir,
            inputs=world.inputs,
            answers={**world.answers, **(answers or {})},
            scenario=world.id,
            after_step=sandbox.after_step,
        )
        assert result.status == "succeeded", result.error
        yield sandbox, result


def scenario_bundle(scenario: str, evidence_dir: Path) -> Path:
    """A finished scenario run's bundle with both reports written. The session's dummy
    credentials are put back after the sandbox."""
    import os

    from kmsir import report

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    with played(scenario, evidence_dir) as (_, result):
        pass
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value
    report.write(result.bundle, fmt="md")
    report.write(result.bundle, fmt="html")
    return result.bundle


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished rogue-grant run, shared read-only by tests."""
    return scenario_bundle("rogue-grant", tmp_path_factory.mktemp("ev"))


@pytest.fixture
def rogue_grant_result(rogue_grant: Sandbox, tmp_path: Path) -> tuple[dict[str, Any], RunResult]:
    """The demo's playbook and answers run in the rogue-grant sandbox; AWS state after it."""
    world = rogue_grant.scenario
    loaded = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml")
    result = run_playbook(
        loaded,
        rogue_grant.client_factory(),
        tmp_path,
        inputs=world.inputs,
        answers=world.answers,
        scenario=world.id,
        after_step=rogue_grant.after_step,
    )
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    state = {
        "grants": [g["GrantId"] for g in kms.list_grants(KeyId=key_id)["Grants"]],
        "state": kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"],
        "app_grant": rogue_grant.grants["app"]["id"],
    }
    return state, result


class LoopbackServer:
    """moto as a server on 127.0.0.1, for commands run as subprocesses (AWS_ENDPOINT_URL)."""

    def __init__(self) -> None:
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name="eu-west-1", endpoint_url=self.endpoint)

    def env(self) -> dict[str, str]:
        import os

        return {**os.environ, "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        if self._server is not None:
            import urllib.request

            # The threaded server serves this process's moto backends: empty them, so the
            # next test in this worker does not find this one's buckets (moto's reset API).
            url = self.endpoint + "/moto-api/reset"  # http://127.0.0.1:PORT, this fixture's
            reset = urllib.request.Request(url, method="POST")  # noqa: S310
            with contextlib.suppress(OSError):
                urllib.request.urlopen(reset, timeout=30).close()  # noqa: S310
            self._server.stop()
            self._server = None


@pytest.fixture
def moto_server() -> Iterator[LoopbackServer]:
    """A loopback moto server, stopped after the test (or earlier, by the test)."""
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def served(scenario: str, workdir: Path) -> Iterator[dict[str, str]]:
    """``kmsir sandbox serve --scenario`` in a child process; yields the variables it
    exported (endpoint on 127.0.0.1, dummy credentials, Region). Ctrl-C stops it on exit,
    and it must stop cleanly (exit 0, "stopped")."""
    import signal
    import subprocess
    import sys
    import time

    server = subprocess.Popen(
        [sys.executable, "-m", "kmsir", "sandbox", "serve", "--scenario", scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
    )
    try:
        assert server.stdout is not None
        exported: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(exported) < 6 and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            name, _, value = line.strip().removeprefix("export ").partition("=")
            exported[name] = value
        assert exported.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"), exported
        yield exported
    finally:
        server.send_signal(signal.SIGINT)
        # a guard against a hang, not a timing: a loaded machine may take long to stop it
        _, stderr = server.communicate(timeout=180)
    assert server.returncode == 0, stderr
    assert "stopped" in stderr


def served_cli_env(exported: dict[str, str]) -> dict[str, str]:
    """The environment of an AWS CLI pointed at ``kmsir sandbox serve`` by the variables it
    printed alone: no profile, config or credentials file of the machine."""
    env = {
        **os.environ,
        **exported,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    env.pop("AWS_PROFILE", None)
    return env


def served_client(exported: dict[str, str], service: str) -> Any:
    """A boto3 client made only from the variables ``kmsir sandbox serve`` printed."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=exported["AWS_ENDPOINT_URL"],
        region_name=exported["AWS_DEFAULT_REGION"],
        aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=exported["AWS_SESSION_TOKEN"],
    )


def refused_scenario(tmp_path: Path, name: str, good: str, bad: str) -> tuple[Path, str]:
    """Built-in scenario ``name`` with ``good`` (found once) replaced by ``bad``, written
    under ``tmp_path`` and loaded: the file and the one problem its loading names."""
    from kmsir.errors import PlaybookError

    text = (scenarios.scenario_dir() / f"{name}.yaml").read_text()
    assert text.count(good) == 1
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(good, bad))
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    (problem,) = raised.value.problems
    return path, problem


_RSA_KEYS: dict[tuple[int, int], Any] = {}


@pytest.fixture
def rsa_keys_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every RSA key pair ``cryptography`` makes during the test is the one this process made
    first for that size and exponent: the sandbox's GetParametersForImport makes a new 4096-bit
    wrapping key per call (0.2 to 1 s of CPU each, more than the rest of the call), and runs of
    every action call it twice. Only for tests that check nothing about keys being apart (not
    autouse: the shim's own tests look at fresh wrapping keys)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    generate = rsa.generate_private_key

    def generate_private_key(public_exponent: int, key_size: int, backend: Any = None) -> Any:
        made = _RSA_KEYS.get((public_exponent, key_size))
        if made is None:
            made = _RSA_KEYS[(public_exponent, key_size)] = generate(public_exponent, key_size)
        return made

    monkeypatch.setattr(rsa, "generate_private_key", generate_private_key)


@pytest.fixture
def unsynced(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.fsync`` does nothing during the test: a run fsyncs each journal entry and each
    artifact with its folder (a thousand calls in a run of every action, seconds of waiting
    on a disk). Only for tests that read what a run wrote, never what survives a crash."""
    import os

    monkeypatch.setattr(os, "fsync", lambda fd: None)


_BOTOCORE_FILES: dict[str, Any] = {}
#: Services whose loaded model botocore changes in place for each client (S3 takes
#: ``/{Bucket}`` out of its request URIs, S3 Control its account host prefix): read afresh.
_CHANGED_BY_BOTOCORE = ("s3", "s3control")


@pytest.fixture
def botocore_files_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore reads and parses its JSON data (service models, endpoints, partitions, retry
    rules) once per session, and every run, sandbox and live-style account makes sessions of
    its own: a run of every action parsed about 60 files again, a second of CPU. Here each file
    is parsed once per process and the parsed data shared, as one session already shares it
    between its clients (what botocore does to loaded data, resolving the retry rules'
    references and merging a model's extras, comes out the same when done again)."""
    from botocore import loaders

    read = loaders.JSONFileLoader.load_file

    def load_file(self: Any, file_path: str) -> Any:
        if any(f"{os.sep}{name}{os.sep}" in file_path for name in _CHANGED_BY_BOTOCORE):
            return read(self, file_path)
        if file_path not in _BOTOCORE_FILES:
            _BOTOCORE_FILES[file_path] = read(self, file_path)
        return _BOTOCORE_FILES[file_path]

    monkeypatch.setattr(loaders.JSONFileLoader, "load_file", load_file)
    _botocore_session_work_once(monkeypatch)


_BOTOCORE_ONCE: dict[tuple[Any, ...], Any] = {}


def _botocore_session_work_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest of what botocore does again for each new session and client, done once per
    process (each answer depends only on what it is cached by, fixed in a process): the list
    of services and each service's latest API version (a walk of botocore's data folders:
    about 30 ms a client), whether a hook accepts ``**kwargs`` (``inspect`` on each of some
    150 handlers a session registers; cached by the handler's code, which decides it), and
    the aliased name of an event (each new client's emitter starts with an empty cache).
    Client creation went from about 40 ms to 15; a run makes several clients and the suite
    thousands of runs."""
    from botocore import hooks, loaders

    services = loaders.Loader.list_available_services
    latest = loaders.Loader.determine_latest_version
    accepts = hooks.accepts_kwargs
    alias = hooks.EventAliaser._alias_event_name

    def once(key: tuple[Any, ...], work: Any) -> Any:
        if key not in _BOTOCORE_ONCE:
            _BOTOCORE_ONCE[key] = work()
        return _BOTOCORE_ONCE[key]

    def list_available_services(self: Any, type_name: str) -> list[str]:
        key = ("services", tuple(self.search_paths), type_name)
        return list(once(key, lambda: services(self, type_name)))

    def determine_latest_version(self: Any, service_name: str, type_name: str) -> str:
        key = ("latest", tuple(self.search_paths), service_name, type_name)
        return once(key, lambda: latest(self, service_name, type_name))  # type: ignore[no-any-return]

    def accepts_kwargs(func: Any) -> bool:
        # by code object: closures made afresh for each client share theirs (keeping the
        # functions themselves would keep every client they close over alive)
        code = getattr(getattr(func, "__func__", func), "__code__", None)
        if code is None:
            return accepts(func)  # type: ignore[no-any-return]
        return once(("kwargs", code), lambda: accepts(func))  # type: ignore[no-any-return]

    def alias_event_name(self: Any, event_name: str) -> str:
        if self._event_aliases is not hooks.EVENT_ALIASES:
            return alias(self, event_name)  # type: ignore[no-any-return]
        return once(("alias", event_name), lambda: alias(self, event_name))  # type: ignore[no-any-return]

    monkeypatch.setattr(loaders.Loader, "list_available_services", list_available_services)
    monkeypatch.setattr(loaders.Loader, "determine_latest_version", determine_latest_version)
    monkeypatch.setattr(hooks, "accepts_kwargs", accepts_kwargs)
    monkeypatch.setattr(hooks.EventAliaser, "_alias_event_name", alias_event_name)


@pytest.fixture(autouse=True)
def _in_process_io_once(unsynced: None, botocore_files_read_once: None) -> None:
    """Every test: in this process, writes are not fsync'd and botocore's data files are
    parsed once (see both fixtures). What must survive a crash is tested in processes of
    their own (test_crash, test_stops, test_resume), which keep the real fsync; the code
    that calls fsync still runs here."""
