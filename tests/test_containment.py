"""Sandbox containment: a sandbox run on a responder's machine, whose shell points at a real
account (keys, a production profile with credential_process, SSO and a role to assume, an
endpoint, a ~/.aws/config), never opens a connection outside 127.0.0.1 and never runs the
profile's credential_process, and still succeeds. ``sandbox serve`` listens on 127.0.0.1 only
and hands out the sandbox's dummy credentials, never the shell's.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kmsir.sandbox import DUMMY_CREDENTIALS, Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import Ran, cli
from .conftest import served_client
from .netguard import NetGuard

REAL_KEY_ID = "AKIAZZREALKEY0000001"
REAL_SECRET = "RealSecretAccessKeyForProdDoNotUse000001"
REAL_TOKEN = "RealSessionTokenForProdFwoGZXIvYXdzEJr000001"
PROD_ENDPOINT = "https://kms.eu-west-1.amazonaws.com"


@pytest.fixture
def hostile_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of a responder logged in to production: returns the file the
    profiles' credential_process writes when it is run (it must never exist)."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    ran = tmp_path / "credential-process-ran"
    script = tmp_path / "credential_process.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import json, pathlib
            pathlib.Path({str(ran)!r}).write_text("ran")
            print(json.dumps({{"Version": 1, "AccessKeyId": {REAL_KEY_ID!r},
                               "SecretAccessKey": {REAL_SECRET!r},
                               "SessionToken": {REAL_TOKEN!r}}}))
            """
        )
    )
    process = f"{sys.executable} {script}"
    config = textwrap.dedent(
        f"""\
        [default]
        region = eu-west-1
        credential_process = {process}
        endpoint_url = {PROD_ENDPOINT}

        [profile base]
        credential_process = {process}
        region = eu-west-1

        [profile prod]
        role_arn = arn:aws:iam::210987654321:role/IncidentResponder
        source_profile = base
        region = eu-west-1
        endpoint_url = {PROD_ENDPOINT}
        sso_start_url = https://corp.awsapps.com/start
        sso_region = eu-west-1
        sso_account_id = 210987654321
        sso_role_name = IncidentResponder
        credential_process = {process}

        [profile sso]
        sso_session = corp
        sso_account_id = 210987654321
        sso_role_name = IncidentResponder

        [sso-session corp]
        sso_start_url = https://corp.awsapps.com/start
        sso_region = eu-west-1
        """
    )
    (home / ".aws" / "config").write_text(config)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {REAL_KEY_ID}\naws_secret_access_key = {REAL_SECRET}\n"
        f"[prod]\ncredential_process = {process}\n"
    )
    token_file = tmp_path / "web-identity-token"
    token_file.write_text("eyJraWQiOiJyZWFsIn0.real.token")
    monkeypatch.setenv("HOME", str(home))
    for name, value in {
        "AWS_ACCESS_KEY_ID": REAL_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": REAL_SECRET,
        "AWS_SESSION_TOKEN": REAL_TOKEN,
        "AWS_PROFILE": "prod",
        "AWS_DEFAULT_PROFILE": "prod",
        "AWS_CONFIG_FILE": str(home / ".aws" / "config"),
        "AWS_ENDPOINT_URL": PROD_ENDPOINT,
        "AWS_ENDPOINT_URL_KMS": PROD_ENDPOINT,
        # beyond the brief's list: every other way a shell steers an SDK off the sandbox
        "AWS_ENDPOINT_URL_IAM": "https://iam.corp.example.com",
        "AWS_ENDPOINT_URL_S3": "https://s3.corp.example.com",
        "AWS_ENDPOINT_URL_STS": "https://sts.corp.example.com",
        "AWS_ENDPOINT_URL_CLOUDTRAIL": "https://cloudtrail.corp.example.com",
        "AWS_USE_DUALSTACK_ENDPOINT": "true",
        "AWS_USE_FIPS_ENDPOINT": "true",
        "AWS_ROLE_ARN": "arn:aws:iam::210987654321:role/IncidentResponder",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SHARED_CREDENTIALS_FILE", raising=False)  # ~/.aws/credentials
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)  # the metadata service too
    return ran


def assert_contained(ran: Ran, net: NetGuard, marker: Path) -> None:
    assert net.refused == [], net.refused
    assert not marker.exists(), "the profile's credential_process was run"
    for secret in (REAL_KEY_ID, REAL_SECRET, REAL_TOKEN):
        assert secret not in ran.output


def test_the_guard_catches_a_client_that_reaches_out(net: NetGuard) -> None:
    """Without the sandbox, a client goes to AWS: the guard sees it (so it can fail a test)."""
    import boto3
    from botocore.exceptions import EndpointConnectionError

    kms = boto3.client("kms", region_name="eu-west-1")
    with pytest.raises(EndpointConnectionError):
        kms.list_keys()
    assert any("kms.eu-west-1.amazonaws.com" in attempt for attempt in net.refused)


@pytest.mark.parametrize("name", sorted(scenarios.available()))
def test_demo_stays_on_this_machine(
    name: str, hostile_shell: Path, net: NetGuard, tmp_path: Path
) -> None:
    ran = cli("demo", "--scenario", name, "--evidence-dir", tmp_path / "ev")
    assert ran.exit_code == 0, ran.output
    assert_contained(ran, net, hostile_shell)


def test_sandbox_run_and_its_resume_stay_on_this_machine(
    hostile_shell: Path, net: NetGuard, tmp_path: Path
) -> None:
    world = scenarios.load("rogue-grant")
    answers = {**world.inputs, **world.answers}
    partial = {k: v for k, v in answers.items() if k != "disable"}  # stops before disable
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(partial))
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers))
    evidence = tmp_path / "ev"
    stopped = cli(
        "run", world.playbook, "--sandbox", world.id, "--incident", "INC-contained",
        "--answers", tmp_path / "partial.yaml", "--evidence-dir", evidence,
    )  # fmt: skip
    assert stopped.exit_code == 1, stopped.output
    assert "disable" in stopped.stderr
    (bundle,) = {journal.parent for journal in evidence.rglob("journal.jsonl")}
    resumed = cli("resume", bundle, "--answers", tmp_path / "answers.yaml")
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["mode"] == "sandbox"
    assert_contained(stopped, net, hostile_shell)
    assert_contained(resumed, net, hostile_shell)


def test_the_sandbox_s_own_clients_never_go_on_the_wire(net: NetGuard) -> None:
    """Seeding, injects and replay use the sandbox's session: a client of it pointed anywhere
    moto does not answer is refused before any connection (not only kmsir's own clients)."""
    from kmsir.errors import AwsError

    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        s3 = sandbox.session().client("s3", endpoint_url="https://s3.corp.example.com")
        with pytest.raises(AwsError, match="sandbox: refused to send"):
            s3.list_buckets()
    assert net.refused == []


def test_sandbox_forces_its_own_credentials_over_a_production_shell(hostile_shell: Path) -> None:
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        session = sandbox.client_factory().session()
        frozen = session.get_credentials().get_frozen_credentials()
        assert (frozen.access_key, frozen.secret_key, frozen.token) == (
            DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
        )
        assert session.region_name == "eu-west-1"  # the scenario's, not the shell's
        kms = sandbox.client_factory().client("kms")
        assert kms.meta.endpoint_url == "https://kms.eu-west-1.amazonaws.com"  # moto answers
        assert len(kms.list_keys()["Keys"]) == len(sandbox.keys)
    assert not hostile_shell.exists()


def test_sandbox_serve_listens_on_loopback_with_dummy_credentials_only(
    hostile_shell: Path, net: NetGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    from kmsir.cli import sandbox as serving

    answered: list[int] = []

    def use_then_stop(seconds: float) -> None:
        """While serving: a client with the printed variables, then Ctrl-C."""
        exported = dict(net_exports)
        kms = served_client(exported, "kms")
        answered.append(len(kms.list_keys()["Keys"]))
        raise KeyboardInterrupt

    net_exports: dict[str, str] = {}
    printed = builtins.print

    def capture(*args: object, **kwargs: object) -> None:
        line = " ".join(str(a) for a in args)
        name, _, value = line.removeprefix("export ").partition("=")
        net_exports[name] = value
        printed(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(serving, "print", capture, raising=False)
    monkeypatch.setattr(serving.time, "sleep", use_then_stop)
    ran = cli("sandbox", "serve", "--scenario", "rogue-grant")
    assert ran.exit_code == 0, ran.output
    assert "stopped" in ran.stderr
    assert answered == [1]  # the served world answered on loopback
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in ran.stdout.splitlines() if line
    )
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert {k: v for k, v in exports.items() if k in DUMMY_CREDENTIALS} == DUMMY_CREDENTIALS
    assert exports["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert net.bound and all(host == "127.0.0.1" for host, _ in net.bound), net.bound
    assert net.loopback  # the client's connection did go through, to 127.0.0.1
    assert_contained(ran, net, hostile_shell)
