"""Secrets are never written: not the run's own credentials (nor the sandbox's dummy secret and
token), not the secret keys of IAM users' access keys, not a plaintext a Decrypt returned.

Every scenario's demo, and a playbook using every registered action against every scenario's
world (in the sandbox, and live-style: moto with the secrets as the run's credentials), runs
with recognizable markers; a test-only step decrypts a marker plaintext through the run's own
clients, so the Decrypt response carrying it passes kmsir's call recorder. Then every file of
the bundle (gzip members opened), both reports, the export archive (each member) and the
terminal output (stdout and stderr, with ``--debug`` too, and of failing runs) are searched
for each marker raw, in base64 (any alignment, standard and URL-safe), in hex and URL-encoded.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import pytest
import yaml

from kmsir import actions
from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.aws import aws_errors
from kmsir.sandbox import DUMMY_CREDENTIALS, Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .clikit import Ran, cli
from .conftest import PLAYBOOKS
from .netguard import NetGuard

RUN_KEY_ID = "AKIAKMSIRMARKER7Q2Z9"
RUN_SECRET = "kmsirMarkerRunSecretAccessKey0123456789Z"
RUN_TOKEN = "kmsirMarkerRunSessionTokenFQoGZXIvYXdzEBaaBBccDDeeFF0123456789"
PLAINTEXT = "kmsirMarkerDecryptedPlaintext4111111111111111"
#: Key material imported into an EXTERNAL key (32 bytes: what a symmetric key takes).
MATERIAL = "kmsirMarkerImportedKeyMaterial32"
#: The run's own credentials, as a shell would hold them.
RUN_ENV = {
    "AWS_ACCESS_KEY_ID": RUN_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": RUN_SECRET,
    "AWS_SESSION_TOKEN": RUN_TOKEN,
}
FIXED_MARKERS = {
    "run access key id": RUN_KEY_ID,
    "run secret access key": RUN_SECRET,
    "run session token": RUN_TOKEN,
    "sandbox dummy secret": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    "sandbox dummy token": DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
    "decrypted plaintext": PLAINTEXT,
    "imported key material": MATERIAL,
}
SANDBOX_CREDENTIALS = (
    DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
    DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
)
#: The actions kmsir registers (the probes come on top, in tests that use them).
REGISTERED = frozenset(actions.registry())
PROBE_KEY = "alias/kmsir-probe"
PROBE_USER = "kmsir-probe-user"
PROBE_ROLE = "kmsir-probe-role"
ACCOUNT = scenarios.ACCOUNT


# -- markers and where they hide -------------------------------------------------------------


def encodings(marker: str) -> dict[str, bytes]:
    """The forms a marker could be written in: raw, hex, URL-encoded, and base64 (standard and
    URL-safe) at each of the three byte alignments it can have inside a longer value (only the
    characters that depend on the marker's bytes alone)."""
    raw = marker.encode()
    forms = {
        "raw": raw,
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "url": quote(marker, safe="").encode(),
        "url+": quote_plus(marker, safe="").encode(),
    }
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        first = -(-shift // 3) * 4  # the first group made of marker bytes only
        last = (shift + len(raw)) // 3 * 4
        forms[f"base64@{shift}"] = encoded[first:last]
        forms[f"base64url@{shift}"] = encoded[first:last].translate(bytes.maketrans(b"+/", b"-_"))
    return forms


def find(markers: Mapping[str, str], texts: Mapping[str, bytes]) -> list[str]:
    """Every (place, marker, encoding) found."""
    found = []
    for name, marker in markers.items():
        for kind, form in encodings(marker).items():
            found += [f"{where}: {name} ({kind})" for where, data in texts.items() if form in data]
    return found


def _opened(where: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` and, for a gzip or tar member, what is inside (recursively)."""
    yield where, data
    if data[:2] == b"\x1f\x8b":
        yield from _opened(f"{where}!gunzip", gzip.decompress(data))
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    yield from _opened(f"{where}!{member.name}", handle.read())


def files(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself), gzip and tar members opened."""
    texts: dict[str, bytes] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            texts.update(_opened(str(path), path.read_bytes()))
    return texts


def output(label: str, ran: Ran) -> dict[str, bytes]:
    return {f"{label} stdout": ran.stdout.encode(), f"{label} stderr": ran.stderr.encode()}


# -- test-only actions: a Decrypt through the run's clients, an IAM user's access key --------


@dataclass
class Seen:
    """What the probes saw while the run went on (so a test knows the markers were there)."""

    plaintexts: list[bytes] = field(default_factory=list)
    credentials: list[tuple[str, str, str | None]] = field(default_factory=list)
    user_secrets: dict[str, str] = field(default_factory=dict)


SEEN = Seen()


class DecryptParams(Params):
    """``misuse``: send the plaintext where the ciphertext goes (AWS refuses it), through
    kmsir's error translation (``step``) or past it (``internal``: an unexpected error)."""

    key: str
    misuse: Literal["no", "step", "internal"] = "no"


class DecryptProbe(Action[DecryptParams]):
    """Test only: data an application encrypted (outside this run) is decrypted through the
    run's own clients, so the response with the plaintext passes kmsir's call recorder."""

    name = "test.decrypt"
    params = DecryptParams
    permissions = ("kms:Decrypt",)

    def run(self, ctx: ActionContext, params: DecryptParams) -> Outcome:
        session = ctx.clients.session()
        frozen = session.get_credentials().get_frozen_credentials()
        SEEN.credentials.append((frozen.access_key, frozen.secret_key, frozen.token))
        SEEN.user_secrets.update(_iam_user_secrets())
        application = session.client("kms", region_name=ctx.clients.resolved_region)
        blob = application.encrypt(KeyId=params.key, Plaintext=PLAINTEXT.encode())
        kms = ctx.clients.client("kms")
        if params.misuse == "internal":
            kms.decrypt(CiphertextBlob=PLAINTEXT.encode())
        with aws_errors(f"Decrypt under {params.key}"):
            sent = PLAINTEXT.encode() if params.misuse == "step" else blob["CiphertextBlob"]
            answer = kms.decrypt(CiphertextBlob=sent)
        SEEN.plaintexts.append(answer["Plaintext"])
        size = len(answer["Plaintext"])
        return Outcome(outputs={"bytes": size}, summary=f"decrypted {size} bytes")


class UserParams(Params):
    user: str


class FirstAccessKey(Action[UserParams]):
    """Test only: an IAM user's first access key id, for the iam.* steps."""

    name = "test.first-access-key"
    params = UserParams
    permissions = ("iam:ListAccessKeys",)

    def run(self, ctx: ActionContext, params: UserParams) -> Outcome:
        iam = ctx.clients.client("iam")
        with aws_errors(f"ListAccessKeys for {params.user}", service="iam"):
            keys = iam.list_access_keys(UserName=params.user)["AccessKeyMetadata"]
        key_id = keys[0]["AccessKeyId"]
        return Outcome(outputs={"user": params.user, "access_key_id": key_id}, summary=key_id)


class RequestParams(Params):
    key: str
    carry: Literal["plaintext-as-text", "malformed-context"]


class RequestProbe(Action[RequestParams]):
    """Test only: a request that itself carries the plaintext through the run's clients: as
    a text ``Plaintext`` (boto3 takes text for a blob), or inside a malformed parameter that
    botocore refuses with a message quoting its value."""

    name = "test.encrypt"
    params = RequestParams
    permissions = ("kms:Encrypt",)

    def run(self, ctx: ActionContext, params: RequestParams) -> Outcome:
        kms = ctx.clients.client("kms")
        with aws_errors(f"Encrypt under {params.key}"):
            if params.carry == "plaintext-as-text":
                kms.encrypt(KeyId=params.key, Plaintext=PLAINTEXT)
            else:
                context = {"purpose": PLAINTEXT.encode()}  # bytes where text is wanted
                kms.encrypt(KeyId=params.key, Plaintext=b"x", EncryptionContext=context)
        SEEN.plaintexts.append(PLAINTEXT.encode())
        return Outcome(outputs={}, summary="encrypted")


class NoParams(Params):
    pass


class ExternalKeyProbe(Action[NoParams]):
    """Test only: an EXTERNAL key with ``MATERIAL`` imported through the run's own clients,
    and the responder's copy of it in ``escrow.bin`` (in the working directory), for the
    imported-material steps."""

    name = "test.external-key"
    params = NoParams
    permissions = ("kms:CreateKey", "kms:GetParametersForImport", "kms:ImportKeyMaterial")

    def run(self, ctx: ActionContext, params: NoParams) -> Outcome:
        from kmsir.sandbox.seed_kms import import_bytes

        kms = ctx.clients.client("kms")
        key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
        expiry = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
        import_bytes(kms, key_id, MATERIAL.encode(), expiry)
        Path("escrow.bin").write_bytes(MATERIAL.encode())
        return Outcome(outputs={"key_id": key_id, "material": "escrow.bin"}, summary=key_id)


class KeyStoreProbe(Action[NoParams]):
    """Test only: a connected CloudHSM key store, for the key store steps."""

    name = "test.key-store"
    params = NoParams
    permissions = ("kms:CreateCustomKeyStore", "kms:ConnectCustomKeyStore")

    def run(self, ctx: ActionContext, params: NoParams) -> Outcome:
        kms = ctx.clients.client("kms")
        store = kms.create_custom_key_store(
            CustomKeyStoreName="secrets-probe-hsm",
            CloudHsmClusterId="cluster-1a23b4cdefg",
            TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
            KeyStorePassword="kmsPswd1",
        )["CustomKeyStoreId"]
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        return Outcome(outputs={"store_id": store}, summary=store)


class OrganisationProbe(Action[NoParams]):
    """Test only: an organisation (SCPs enabled) managed by the run's account, and an OU in
    it, for the org.* steps."""

    name = "test.organisation"
    params = NoParams
    permissions = (
        "organizations:CreateOrganization",
        "organizations:EnablePolicyType",
        "organizations:CreateOrganizationalUnit",
    )

    def run(self, ctx: ActionContext, params: NoParams) -> Outcome:
        api = ctx.clients.client("organizations")
        api.create_organization(FeatureSet="ALL")
        root = api.list_roots()["Roots"][0]["Id"]
        api.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        ou = api.create_organizational_unit(ParentId=root, Name="probe")["OrganizationalUnit"]
        return Outcome(outputs={"ou": ou["Id"]}, summary=ou["Id"])


def _iam_user_secrets() -> dict[str, str]:
    """The secret keys moto holds for the IAM users' access keys (the world's, not kmsir's)."""
    from moto.iam.models import iam_backends

    backend = iam_backends[ACCOUNT]["aws"]
    return {
        f"secret of {user.name}'s {key.access_key_id}": key.secret_access_key
        for user in backend.users.values()
        for key in user.access_keys
    }


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Seen:
    """The registry with the test-only actions (the CLI reads it at each command)."""
    original = actions.registry

    def with_probes() -> actions.Registry:
        probes: list[Action[Any]] = [
            DecryptProbe(),
            FirstAccessKey(),
            RequestProbe(),
            ExternalKeyProbe(),
            KeyStoreProbe(),
            OrganisationProbe(),
        ]
        return {**original(), **{probe.name: probe for probe in probes}}

    monkeypatch.setattr(actions, "registry", with_probes)
    SEEN.plaintexts.clear()
    SEEN.credentials.clear()
    SEEN.user_secrets.clear()
    return SEEN


@pytest.fixture(autouse=True)
def _cheaper_runs(rsa_keys_made_once: None, unsynced: None, botocore_files_read_once: None) -> None:
    """What is searched for is what the runs wrote, never what a crash would leave nor a
    wrapping key: the runs skip fsync (a thousand calls in each run of every action), share
    one RSA key pair per size (each imports key material twice, a new 4096-bit wrapping key
    per GetParametersForImport) and botocore's parsed data files. All in ``conftest``."""


# -- scenarios and playbooks -----------------------------------------------------------------


def scenario_copy(name: str, where: Path, playbook: str) -> Path:
    """Built-in scenario ``name`` with a probe key and an IAM user with two access keys added,
    its playbook the file ``playbook`` beside it."""
    data = yaml.safe_load((scenarios.scenario_dir() / f"{name}.yaml").read_text())
    data["keys"]["probe"] = {"description": "Secrets probe", "alias": PROBE_KEY}
    data.setdefault("users", {})["probe"] = {"name": PROBE_USER, "access_keys": 2}
    probe_role = {"type": "AssumedRole", "name": PROBE_ROLE, "session": "s"}
    data.setdefault("identities", {})["probe-role"] = probe_role
    data["playbook"] = playbook
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def demo_with_probe(name: str, where: Path) -> Path:
    """The scenario, its own playbook with a Decrypt step after the first step."""
    world = scenarios.load(name)
    book = yaml.safe_load((PLAYBOOKS / f"{world.playbook}.yaml").read_text())
    probe = {"id": "decrypt-probe", "action": "test.decrypt", "with": {"key": PROBE_KEY}}
    book["steps"].insert(1, probe)
    (where / "probe-playbook.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    return scenario_copy(name, where, "probe-playbook.yaml")


KEY = "{{ steps.snapshot.key_id }}"
ARN = "{{ steps.snapshot.arn }}"
OUTSIDE = "444455556666"
ROOT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}
#: Every registered action once, with a Decrypt through the run's clients among them.
EVERY_ACTION: list[dict[str, Any]] = [
    {"id": "snapshot", "action": "kms.snapshot", "with": {"key": "{{ inputs.key }}"}},
    {"id": "decrypt-probe", "action": "test.decrypt", "with": {"key": PROBE_KEY}},
    {
        "id": "collect",
        "action": "cloudtrail.collect",
        "with": {"key": ARN, "aliases": "{{ steps.snapshot.aliases }}", "since": "7d"},
    },
    {
        "id": "collect-s3",
        "action": "cloudtrail.collect",
        "with": {"key": ARN, "source": "s3", "bucket": scenarios.trail_bucket(ACCOUNT)},
    },
    {"id": "findings", "action": "cloudtrail.findings", "with": {"events": "collect", "key": ARN}},
    {"id": "triage", "action": "note", "with": {"text": "{{ steps.findings.count }} finding(s)"}},
    {"id": "blast", "action": "kms.blast-radius", "with": {"key": ARN, "events": "collect"}},
    {"id": "review", "action": "kms.audit", "with": {"all": True}},
    {"id": "decide", "action": "ask", "with": {"question": "Go on?", "choices": ["go", "stop"]}},
    {"id": "informed", "action": "confirm", "with": {"message": "Owners informed"}},
    {"id": "hand-off", "action": "checklist", "with": {"items": ["Ticket opened"]}},
    {
        "id": "attach",
        "action": "evidence.attach",
        "with": {"path": "answers.yaml", "description": "this run's answers"},
    },
    {"id": "settle", "action": "wait", "with": {"duration": "0s"}},
    {"id": "cancel", "action": "kms.cancel-deletion", "with": {"key": KEY}},
    {"id": "enable", "action": "kms.enable-key", "with": {"key": KEY}},
    {"id": "tag", "action": "kms.tag-key", "with": {"key": KEY}},
    {"id": "rotation", "action": "kms.enable-rotation", "with": {"key": KEY}},
    {"id": "rotate", "action": "kms.rotate-now", "with": {"key": KEY}},
    {"id": "put-policy", "action": "kms.put-policy", "with": {"key": KEY, "policy": ROOT_POLICY}},
    {
        "id": "quarantine",
        "action": "kms.quarantine",
        "with": {"key": KEY, "break_glass": ["{{ run.operator }}"]},
    },
    {"id": "deny", "action": "kms.deny-principals", "with": {"key": KEY, "principals": [OUTSIDE]}},
    {"id": "restore", "action": "kms.restore-policy", "with": {"key": KEY, "from": "snapshot"}},
    {
        "id": "revoke",
        "action": "kms.revoke-grants",
        "with": {"key": KEY, "filter": {"allowed_accounts": [ACCOUNT]}},
    },
    {
        "id": "retire",
        "action": "kms.retire-grants",
        "with": {"key": KEY, "filter": {"operations": ["Decrypt"]}},
    },
    {"id": "user", "action": "test.first-access-key", "with": {"user": PROBE_USER}},
    {
        "id": "deactivate",
        "action": "iam.deactivate-access-key",
        "with": {"user": PROBE_USER, "access_key_id": "{{ steps.user.access_key_id }}"},
    },
    {
        "id": "reactivate",
        "action": "iam.reactivate-access-key",
        "with": {"user": PROBE_USER, "access_key_id": "{{ steps.user.access_key_id }}"},
    },
    {"id": "revoke-sessions", "action": "iam.revoke-role-sessions", "with": {"role": PROBE_ROLE}},
    {"id": "restore-sessions", "action": "iam.restore-role-sessions", "with": {"role": PROBE_ROLE}},
    {"id": "deny-all", "action": "iam.attach-deny-policy", "with": {"user": PROBE_USER}},
    {"id": "allow-all", "action": "iam.detach-deny-policy", "with": {"user": PROBE_USER}},
    {"id": "org", "action": "test.organisation", "with": {}},
    {
        "id": "scp",
        "action": "org.attach-scp",
        "with": {"targets": ["{{ steps.org.ou }}"], "break_glass": ["arn:aws:iam::*:role/Glass"]},
    },
    {
        "id": "unscp",
        "action": "org.detach-scp",
        "with": {
            "policy": "{{ steps.scp.policy_id }}",
            "targets": "{{ steps.org.ou }}",
            "delete": True,
        },
    },
    {"id": "external", "action": "test.external-key", "with": {}},
    {
        "id": "unimport",
        "action": "kms.delete-imported-material",
        "with": {"key": "{{ steps.external.key_id }}"},
    },
    {
        "id": "reimport",
        "action": "kms.import-key-material",
        "with": {
            "key": "{{ steps.external.key_id }}",
            "material": "{{ steps.external.material }}",
            "valid_to": "30d",
        },
    },
    {"id": "store", "action": "test.key-store", "with": {}},
    {
        "id": "store-off",
        "action": "kms.disconnect-key-store",
        "with": {"store": "{{ steps.store.store_id }}"},
    },
    {
        "id": "store-on",
        "action": "kms.connect-key-store",
        "with": {"store": "{{ steps.store.store_id }}"},
    },
    {"id": "disable", "action": "kms.disable-key", "with": {"key": KEY}},
    {
        "id": "schedule",
        "action": "kms.schedule-deletion",
        # a multi-Region primary (policy-tampering's) is refused without its replicas
        "with": {"key": KEY, "pending_window_days": 7, "replicas": True},
    },
    {"id": "cancel-again", "action": "kms.cancel-deletion", "with": {"key": KEY}},
]


def write_playbook(where: Path, steps: list[dict[str, Any]]) -> Path:
    book = {
        "id": "secrets-probe",
        "title": "Every action once, and a Decrypt through the run's clients",
        "inputs": {"key": {"type": "kms-key", "required": True}},
        "steps": steps,
    }
    path = where / "every-action.yaml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    return path


def answers_for(where: Path, world: Scenario, steps: list[dict[str, Any]]) -> Path:
    # a review scenario's playbook has no key input: the scenario's first aliased key then
    key = world.inputs.get("key") or next(k.alias for k in world.keys.values() if k.alias)
    spec = next((k for k in world.keys.values() if k.alias == key), None)
    if spec is not None and (spec.origin != "AWS_KMS" or spec.store is not None):
        # AWS refuses enabling a key without material, and rotating imported material or a
        # key in a custom key store: every action then runs on the probe key
        key = PROBE_KEY
    answers: dict[str, Any] = {"key": key, "decide": "go", "hand-off.1": "done"}
    answers.update({s["id"]: "approve" for s in steps if s["id"] not in answers})
    path = where / "answers.yaml"
    path.write_text(yaml.safe_dump(answers))
    return path


# -- what a run leaves behind ----------------------------------------------------------------


def bundle_of(evidence: Path) -> Path:
    (bundle,) = {journal.parent for journal in evidence.rglob("journal.jsonl")}
    return bundle


def everything_written(
    bundle: Path, where: Path, runs: dict[str, Ran], *, collected: bool = True
) -> dict[str, bytes]:
    """The bundle's files, both reports rendered again, the export archive and its members,
    and the terminal output of ``runs`` and of these commands."""
    out = where / "out"
    out.mkdir()
    md = cli("report", bundle, "--format", "md", "--out", out / "report.md")
    html = cli("report", bundle, "--format", "html", "--out", out / "report.html")
    exported = cli("export", bundle, "--out", out / "bundle.tar.gz")
    for ran in (md, html, exported):
        assert ran.exit_code == 0, ran.output
    texts = files(bundle, out)
    for label, ran in {**runs, "report md": md, "report html": html, "export": exported}.items():
        texts.update(output(label, ran))
    names = {Path(w.split("!")[0]).name for w in texts}
    assert {"journal.jsonl", "manifest.json", "playbook.yaml", "report.md", "report.html"} <= names
    assert any(w.endswith("events.jsonl.gz!gunzip") for w in texts) == collected
    assert any("bundle.tar.gz!gunzip!" in w and w.endswith("journal.jsonl") for w in texts)
    return texts


def markers(seen: Seen) -> dict[str, str]:
    assert seen.user_secrets, "no IAM user's secret access key to look for"
    return {**FIXED_MARKERS, **seen.user_secrets}


def journal_of(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def assert_decrypted_through_the_recorder(bundle: Path, seen: Seen) -> None:
    """The marker was decrypted, and that Decrypt is in the journal: its response passed the
    recorder (else the scan would prove nothing)."""
    assert PLAINTEXT.encode() in seen.plaintexts
    calls = [e for e in journal_of(bundle) if e["type"] == "api-call"]
    assert any(e["data"]["operation"] == "Decrypt" for e in calls)


# -- the tests -------------------------------------------------------------------------------


def test_the_search_finds_each_marker_in_each_form(tmp_path: Path) -> None:
    marker = "kmsirMarkerSelfTest0123456789"
    planted = {}
    for kind, form in encodings(marker).items():
        path = tmp_path / f"{kind}.txt"
        path.write_bytes(b"prefix " + form + b" suffix")
        planted[kind] = path
    shifted = base64.b64encode(b"ab" + marker.encode() + b"c")  # inside a longer value
    (tmp_path / "nested.gz").write_bytes(gzip.compress(b'{"v": "' + shifted + b'"}'))
    texts = files(tmp_path)
    found = find({"m": marker}, texts)
    for kind, path in planted.items():
        assert f"{path}: m ({kind})" in found
    assert any(w.startswith(f"{tmp_path / 'nested.gz'}!gunzip") for w in found)
    assert find({"m": "kmsirMarkerNotThere000000"}, texts) == []


@pytest.mark.parametrize("name", sorted(scenarios.available()))
def test_a_scenario_demo_writes_no_secret(name: str, probes: Seen, tmp_path: Path) -> None:
    scenario = demo_with_probe(name, tmp_path)
    evidence = tmp_path / "ev"
    ran = cli(
        "--debug", "demo", "--scenario", scenario, "--evidence-dir", evidence,
        cwd=tmp_path, env=RUN_ENV,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    bundle = bundle_of(evidence)
    # the sandbox signed with its own dummy credentials, never the shell's
    assert set(probes.credentials) == {SANDBOX_CREDENTIALS}
    assert_decrypted_through_the_recorder(bundle, probes)
    steps = yaml.safe_load((bundle / "playbook.yaml").read_text())["steps"]
    collected = any(step["action"] == "cloudtrail.collect" for step in steps)
    texts = everything_written(bundle, tmp_path, {"demo": ran}, collected=collected)
    assert find(markers(probes), texts) == []


@pytest.mark.parametrize("name", sorted(scenarios.available()))
def test_every_action_in_a_scenario_sandbox_writes_no_secret(
    name: str, probes: Seen, tmp_path: Path
) -> None:
    world = scenarios.load(name)
    playbook = write_playbook(tmp_path, EVERY_ACTION)
    scenario = scenario_copy(name, tmp_path, world.playbook)
    answers = answers_for(tmp_path, world, EVERY_ACTION)
    evidence = tmp_path / "ev"
    ran = cli(
        "run", playbook, "--sandbox", scenario, "--answers", answers,
        "--incident", "INC-secrets", "--evidence-dir", evidence, cwd=tmp_path, env=RUN_ENV,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    bundle = bundle_of(evidence)
    assert_every_action_ran(bundle)
    assert set(probes.credentials) == {SANDBOX_CREDENTIALS}
    assert_decrypted_through_the_recorder(bundle, probes)
    texts = everything_written(bundle, tmp_path, {"run": ran})
    assert find(markers(probes), texts) == []


@pytest.mark.parametrize("name", sorted(scenarios.available()))
def test_every_action_live_with_the_run_s_own_credentials_writes_no_secret(
    name: str, probes: Seen, net: NetGuard, tmp_path: Path
) -> None:
    """moto as the account, the markers as the shell's credentials: a live run signs with
    them (no sandbox forcing its own), so they are there for kmsir to leak."""
    world = scenarios.load(name)
    playbook = write_playbook(tmp_path, EVERY_ACTION)
    scenario = scenarios.load(str(scenario_copy(name, tmp_path, world.playbook)))
    answers = answers_for(tmp_path, world, EVERY_ACTION)
    evidence = tmp_path / "ev"
    with Sandbox(scenario):  # only the seeded moto world: the run below is a live one
        ran = cli(
            "--debug", "run", playbook, "--region", world.region, "--answers", answers,
            "--incident", "INC-secrets", "--evidence-dir", evidence, cwd=tmp_path, env=RUN_ENV,
        )  # fmt: skip
        assert ran.exit_code == 0, ran.output
        bundle = bundle_of(evidence)
        texts = everything_written(bundle, tmp_path, {"run": ran})
    assert json.loads((bundle / "manifest.json").read_text())["mode"] == "live"
    assert_every_action_ran(bundle)
    assert set(probes.credentials) == {(RUN_KEY_ID, RUN_SECRET, RUN_TOKEN)}
    assert_decrypted_through_the_recorder(bundle, probes)
    assert find(markers(probes), trail_callers_masked(texts, RUN_KEY_ID)) == []
    assert net.refused == []


def trail_callers_masked(texts: dict[str, bytes], key_id: str) -> dict[str, bytes]:
    """``texts`` with ``key_id`` masked where CloudTrail itself logged it: the
    ``userIdentity.accessKeyId`` of the run's own calls, which the sandbox's trail records as
    AWS does and a later collect step keeps as evidence (its events, and the trail log files
    holding them, copied whole for the integrity check). Anywhere else it is still a leak."""

    def mask(event: dict[str, Any]) -> dict[str, Any]:
        identity = event.get("userIdentity") or {}
        if identity.get("accessKeyId") == key_id:
            identity["accessKeyId"] = "<the run's own access key, as CloudTrail logs it>"
        return event

    masked = {}
    for where, data in texts.items():
        if where.endswith("events.jsonl.gz!gunzip") and key_id.encode() in data:
            data = b"\n".join(json.dumps(mask(json.loads(x))).encode() for x in data.splitlines())
        elif "/trail-logs/" in where and where.endswith("!gunzip") and key_id.encode() in data:
            records = [mask(r) for r in json.loads(data)["Records"]]
            data = json.dumps({"Records": records}).encode()
        masked[where] = data
    return masked


@pytest.mark.parametrize("misuse", ["step", "internal"])
@pytest.mark.parametrize("mode", ["sandbox", "live"])
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_failing_run_writes_no_secret(
    misuse: str, mode: str, debug: bool, probes: Seen, net: NetGuard, tmp_path: Path
) -> None:
    """A request carrying the plaintext is refused by AWS (sent where the ciphertext goes):
    the error, the step's failure, a traceback with --debug, the bundle and the reports."""
    steps = [
        EVERY_ACTION[0],
        {"id": "decrypt-probe", "action": "test.decrypt", "with": {"key": PROBE_KEY}},
        {
            "id": "misuse",
            "action": "test.decrypt",
            "with": {"key": PROBE_KEY, "misuse": misuse},
        },
    ]
    world = scenarios.load("leaked-credentials-decrypt-spike")
    playbook = write_playbook(tmp_path, steps)
    scenario = scenario_copy(world.id, tmp_path, world.playbook)
    answers = answers_for(tmp_path, world, steps)
    evidence = tmp_path / "ev"
    args: list[str | Path] = [*(["--debug"] if debug else []), "run", playbook]
    args += ["--answers", answers]
    args += ["--incident", "INC-secrets", "--evidence-dir", evidence]
    if mode == "sandbox":
        ran = cli(*args, "--sandbox", scenario, cwd=tmp_path, env=RUN_ENV)
    else:
        with Sandbox(scenarios.load(str(scenario))):  # the moto world of a live run
            ran = cli(*args, "--region", world.region, cwd=tmp_path, env=RUN_ENV)
    expected = {"step": 1, "internal": 3}[misuse]
    assert ran.exit_code == expected, ran.output
    assert "InvalidCiphertextException" in ran.stderr
    assert ("Traceback" in ran.stderr) == (debug and misuse == "internal")
    bundle = bundle_of(evidence)
    finished = [e for e in journal_of(bundle) if e["type"] == "run-finished"]
    assert [e["data"]["status"] for e in finished] == ["failed"]
    assert_decrypted_through_the_recorder(bundle, probes)
    texts = everything_written(bundle, tmp_path, {"run": ran}, collected=False)
    assert find(markers(probes), texts) == []
    assert net.refused == []


@pytest.mark.parametrize("carry", ["plaintext-as-text", "malformed-context"])
def test_a_request_carrying_the_plaintext_writes_no_secret(
    carry: str, probes: Seen, tmp_path: Path
) -> None:
    """No kmsir action sends a secret today; one that did (a future kms.encrypt, a bug passing
    a wrong type) must not have it written from the request or from the error quoting it."""
    steps = [
        {"id": "encrypt", "action": "test.encrypt", "with": {"key": PROBE_KEY, "carry": carry}}
    ]
    world = scenarios.load("leaked-credentials-decrypt-spike")
    playbook = write_playbook(tmp_path, steps)
    scenario = scenario_copy(world.id, tmp_path, world.playbook)
    answers = answers_for(tmp_path, world, steps)
    ran = cli(
        "run", playbook, "--sandbox", scenario, "--answers", answers,
        "--incident", "INC-secrets", "--evidence-dir", tmp_path / "ev", cwd=tmp_path,
    )  # fmt: skip
    assert ran.exit_code == (0 if carry == "plaintext-as-text" else 1), ran.output
    bundle = bundle_of(tmp_path / "ev")
    texts = everything_written(bundle, tmp_path, {"run": ran}, collected=False)
    assert find({"decrypted plaintext": PLAINTEXT}, texts) == []


def assert_every_action_ran(bundle: Path) -> None:
    """Each registered action (and the probes) ran to success in this bundle."""
    done: dict[str, str] = {}
    for entry in journal_of(bundle):
        if entry["type"] == "step-succeeded":
            done[entry["data"]["action"]] = entry["data"]["status"]
    assert set(done) == {step["action"] for step in EVERY_ACTION}
    assert set(done) >= REGISTERED, REGISTERED - set(done)
    assert set(done.values()) <= {"succeeded", "already"}
