"""`kmsir verify` says what is proven, never more: intact (0), tampered (1), or consistent with
an end that cannot be proven (4); the journal anchor (`run --anchor-key`) closes that gap."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL
from kmsir.prompts import ScriptedPrompter
from kmsir.run.engine import Engine, RunOptions, RunResult
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.signer import KmsSigner
from tests.journalkit import journal_lines

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook


def _copy(bundle: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name / bundle.name
    shutil.copytree(bundle, target)
    return target


def _cut(bundle: Path, lines: int) -> None:
    journal = bundle / JOURNAL
    kept = journal.read_bytes().splitlines(keepends=True)[:-lines]
    journal.write_bytes(b"".join(kept))


def test_an_intact_bundle_exits_0(demo_bundle: Path) -> None:
    done = cli("verify", demo_bundle)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("intact: ")


def test_a_cut_tail_without_its_manifest_is_never_called_intact(
    demo_bundle: Path, tmp_path: Path
) -> None:
    """The defect as found: the last three lines cut and manifest.json deleted verified as
    "intact" with a note."""
    bundle = _copy(demo_bundle, tmp_path)
    _cut(bundle, 3)
    (bundle / "manifest.json").unlink()
    (bundle / "report.md").unlink()  # its record went with the cut lines
    (bundle / "report.html").unlink()
    done = cli("verify", bundle)
    assert done.exit_code == 4, done.output
    remaining = len(journal_lines(bundle / JOURNAL))
    (line,) = [x for x in done.stdout.splitlines() if not x.startswith("note:")]
    assert line.startswith(f"unproven: consistent up to entry {remaining} (head ")
    assert "the end of an unfinished run cannot be proven" in line
    assert "intact" not in done.stdout


def test_one_deleted_journal_line_is_said_once(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(demo_bundle, tmp_path)
    journal = bundle / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    # a line from the middle that records no artifact (else its file would be unrecorded too)
    gone = next(i for i in range(40, len(lines)) if json.loads(lines[i])["type"] != "artifact")
    journal.write_bytes(b"".join(lines[:gone] + lines[gone + 1 :]))
    done = cli("verify", bundle)
    assert done.exit_code == 1
    assert done.stdout.splitlines() == [
        f"TAMPERED: journal.jsonl line {gone + 1}: chain broken: seq {gone + 2} follows seq "
        f"{gone} (1 missing); a line was deleted, inserted or reordered"
    ]


# -- exported archives -----------------------------------------------------------------------


@pytest.fixture
def archive(demo_bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export" / "bundle.tar.gz"
    out.parent.mkdir()
    done = cli("export", demo_bundle, "--out", out)
    assert done.exit_code == 0, done.output
    return out


def test_an_archive_without_its_checksum_says_it_was_not_checked(archive: Path) -> None:
    archive.with_name(archive.name + ".sha256").unlink()
    done = cli("verify", archive)
    assert done.exit_code == 0, done.output
    assert "note: no bundle.tar.gz.sha256 beside it: the archive's checksum was not checked" in (
        done.stdout
    )


def test_a_corrupt_archive_says_archive_corrupt(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zeroes in the deflate stream
    archive.write_bytes(bytes(data))
    archive.with_name(archive.name + ".sha256").unlink()
    done = cli("verify", archive)
    assert done.exit_code == 1
    assert "TAMPERED: bundle.tar.gz: archive corrupt" in done.stdout
    assert "Traceback" not in done.output


def test_a_truncated_gzip_says_archive_corrupt(archive: Path) -> None:
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 3])
    done = cli("verify", archive)
    assert done.exit_code == 1
    assert "archive corrupt" in done.stdout
    assert "sha256 differs" in done.stdout


def test_verify_of_a_missing_file_says_it_does_not_exist(tmp_path: Path) -> None:
    done = cli("verify", tmp_path / "missing.tar.gz")
    assert done.exit_code == 2
    assert (
        done.stderr.strip()
        == f"kmsir: error: {tmp_path / 'missing.tar.gz'}: no such file or directory"
    )


def test_not_a_gzip_at_all(tmp_path: Path) -> None:
    fake = tmp_path / "x.tar.gz"
    fake.write_bytes(gzip.compress(b"not a tar"))
    done = cli("verify", fake)
    assert done.exit_code == 1
    assert "archive corrupt" in done.stdout


# -- the journal anchor --------------------------------------------------------------------


def _anchored_run(tmp_path: Path, *, spec: str = "ECC_NIST_P256") -> tuple[RunResult, str]:
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as sandbox:
        key = sandbox.session().client("kms").create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")
        arn = key["KeyMetadata"]["Arn"]
        engine = Engine(
            actions=actions.registry(),
            clients=sandbox.client_factory(),
            prompter=ScriptedPrompter(world.answers, source="scenario script"),
            sleep=lambda _: None,
            after_step=sandbox.after_step,
            anchor=KmsSigner(sandbox.client_factory(), arn),
        )
        loaded = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml")
        from kmsir.playbook import model as playbook

        options = RunOptions(
            incident_id="INC-anchor",
            evidence_dir=tmp_path / "ev",
            mode="sandbox",
            scenario=world.id,
        )
        result = engine.run(loaded, playbook.resolve_inputs(loaded.playbook, world.inputs), options)
    assert result.status == "succeeded", result.error
    return result, arn


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    result, arn = _anchored_run(tmp_path_factory.mktemp("anchored"))
    return result.bundle, arn


def _entries(bundle: Path) -> list[dict[str, Any]]:
    return journal_lines(bundle / JOURNAL)


def test_an_anchored_run_signs_after_every_step_and_at_the_end(
    anchored: tuple[Path, str],
) -> None:
    bundle, arn = anchored
    entries = _entries(bundle)
    steps = [e for e in entries if e["type"] in ("step-succeeded", "step-skipped")]
    signatures = [e for e in entries if e["type"] == "anchor"]
    assert len(signatures) == len(steps) + 1  # after each step, and after the end
    key = next(e for e in entries if e["type"] == "anchor-key")["data"]
    assert key["key_arn"] == arn and "BEGIN PUBLIC KEY" in key["public_key_pem"]
    record = json.loads((bundle / "anchor.json").read_text())
    assert record["seq"] == signatures[-1]["seq"] and record["head"] == signatures[-1]["hash"]
    checked = integrity.check(bundle)
    assert checked.intact and checked.signed == signatures[-1]["seq"]
    assert checked.signed_by == arn


def test_the_anchor_proves_the_end_without_a_manifest(
    anchored: tuple[Path, str], tmp_path: Path
) -> None:
    bundle = _copy(anchored[0], tmp_path)
    (bundle / "manifest.json").unlink()
    done = cli("verify", bundle)
    assert done.exit_code == 0, done.output
    assert f"signed: {anchored[1]} (public key sha256:" in done.stdout
    assert "signed the journal through entry" in done.stdout
    assert "intact: " in done.stdout


def test_a_cut_tail_is_caught_by_the_anchor_even_without_a_manifest(
    anchored: tuple[Path, str], tmp_path: Path
) -> None:
    bundle = _copy(anchored[0], tmp_path)
    _cut(bundle, 5)  # past the last signature
    (bundle / "manifest.json").unlink()
    done = cli("verify", bundle)
    assert done.exit_code == 1
    assert any(
        line.startswith("TAMPERED: anchor.json: signs line") and "lines were removed" in line
        for line in done.stdout.splitlines()
    ), done.stdout


def test_an_altered_signature_or_an_own_key_pair_does_not_verify(
    anchored: tuple[Path, str], tmp_path: Path
) -> None:
    bundle = _copy(anchored[0], tmp_path)
    record = json.loads((bundle / "anchor.json").read_text())
    record["signature"] = record["signature"][:-8] + "AAAAAAA="
    (bundle / "anchor.json").write_text(json.dumps(record))
    problems = integrity.verify(bundle)
    assert any("anchor.json: the signature over line" in p for p in problems), problems


def test_a_signature_failure_is_journaled_and_the_run_goes_on(tmp_path: Path) -> None:
    world = scenarios.load("ransom-deletion")
    with Sandbox(world) as sandbox:
        kms = sandbox.session().client("kms")
        arn = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        signer = KmsSigner(sandbox.client_factory(), arn)
        signer.describe()
        kms.disable_key(KeyId=arn)  # every Sign from now on is refused
        warnings: list[str] = []
        engine = Engine(
            actions=actions.registry(),
            clients=sandbox.client_factory(),
            prompter=ScriptedPrompter(world.answers, source="scenario script"),
            sleep=lambda _: None,
            anchor=signer,
            warn=warnings.append,
        )
        loaded = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml")
        from kmsir.playbook import model as playbook

        options = RunOptions(incident_id="INC-x", evidence_dir=tmp_path, mode="sandbox")
        result = engine.run(loaded, playbook.resolve_inputs(loaded.playbook, world.inputs), options)
    assert result.status == "succeeded", result.error
    failed = [e for e in _entries(result.bundle) if e["type"] == "anchor-failed"]
    assert failed and "Sign" in failed[0]["data"]["error"]
    assert warnings and "the journal was not signed after entry" in warnings[0]
    checked = integrity.check(result.bundle)
    assert checked.signed == 0 and not checked.problems


def _public_key(bundle: Path) -> str:
    key = next(e for e in _entries(bundle) if e["type"] == "anchor-key")
    return str(key["data"]["public_key_pem"])


def test_the_key_to_trust_can_be_given_and_another_is_caught(
    anchored: tuple[Path, str], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    bundle = anchored[0]
    trusted = tmp_path / "key.pem"
    trusted.write_text(_public_key(bundle))
    assert cli("verify", bundle, "--key", trusted).exit_code == 0
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    stranger = tmp_path / "other.der"
    stranger.write_bytes(
        other.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    done = cli("verify", bundle, "--key", stranger)
    assert done.exit_code == 1
    assert "TAMPERED: journal.jsonl: the journal is anchored with key sha256:" in done.stdout


def test_a_journal_re_anchored_with_another_key_is_caught(
    anchored: tuple[Path, str], tmp_path: Path
) -> None:
    """Someone who can write the bundle cuts the journal, adds an anchor-key entry with a key
    of their own and signs the new head: one run has one key, so it shows."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from kmsir.evidence.bundle import canonical, entry_hash
    from kmsir.evidence.signatures import anchor_digest

    bundle = _copy(anchored[0], tmp_path)
    _cut(bundle, 20)
    (bundle / "manifest.json").unlink()
    entries = _entries(bundle)
    mine = ec.generate_private_key(ec.SECP256R1())
    pem = (
        mine.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    lines = []
    for kind, data in (
        ("anchor-key", {"key_arn": anchored[1], "public_key_pem": pem}),
        ("anchor", {}),
    ):
        last = entries[-1]
        entry = {
            "seq": last["seq"] + 1,
            "ts": last["ts"],
            "type": kind,
            "step": None,
            "data": data,
            "prev": last["hash"],
        }
        entry["hash"] = entry_hash(entry)
        entries.append(entry)
        lines.append(canonical(entry) + b"\n")
    with (bundle / JOURNAL).open("ab") as journal:
        journal.write(b"".join(lines))
    run_id = entries[0]["data"]["run_id"]
    digest = anchor_digest(run_id, entries[-1]["seq"], entries[-1]["hash"])
    signature = mine.sign(bytes.fromhex(digest), ec.ECDSA(hashes.SHA256()))
    record = {"seq": entries[-1]["seq"], "head": entries[-1]["hash"], "sha256": digest}
    record["signature"] = base64.b64encode(signature).decode()
    (bundle / "anchor.json").write_text(json.dumps(record))
    for name in ("report.md", "report.html"):
        (bundle / name).unlink(missing_ok=True)
    problems = integrity.verify(bundle)
    assert "journal.jsonl: anchor-key entries name different keys (one run, one key)" in problems


def test_ctrl_c_while_kms_signs_leaves_a_bundle_that_resumes(tmp_path: Path) -> None:
    world = scenarios.load("ransom-deletion")
    with Sandbox(world) as sandbox:
        kms = sandbox.session().client("kms")
        arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]

        class Interrupting(KmsSigner):
            signed = 0

            def sign(self, digest: str) -> bytes:
                Interrupting.signed += 1
                if Interrupting.signed == 3:
                    raise KeyboardInterrupt
                return super().sign(digest)

        from kmsir.playbook import model as playbook
        from kmsir.run import resume as resuming

        loaded = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml")
        options = RunOptions(
            incident_id="INC-x", evidence_dir=tmp_path, mode="sandbox", scenario=world.id
        )
        inputs = playbook.resolve_inputs(loaded.playbook, world.inputs)

        def engine(signer: KmsSigner) -> Engine:
            return Engine(
                actions=actions.registry(),
                clients=sandbox.client_factory(),
                prompter=ScriptedPrompter(world.answers, source="scenario script"),
                sleep=lambda _: None,
                anchor=signer,
            )

        with pytest.raises(KeyboardInterrupt):
            engine(Interrupting(sandbox.client_factory(), arn)).run(loaded, inputs, options)
        (bundle,) = [p for p in (tmp_path / "INC-x").iterdir() if p.is_dir()]
        checked = integrity.check(bundle)
        assert checked.problems == [] and not checked.intact
        assert [e["type"] for e in _entries(bundle)][-2:] == ["anchor-failed", "run-interrupted"]
        # the same moment under SIGKILL: the journal ends with the anchor no signature holds
        killed = _copy(bundle, tmp_path, "killed")
        _cut(killed, 2)
        unsigned = _entries(killed)[-1]
        assert unsigned["type"] == "anchor"
        assert integrity.check(killed).problems == []
        for stopped in (killed, bundle):
            resumed = engine(KmsSigner(sandbox.client_factory(), arn)).resume(
                loaded, resuming.load(stopped), options
            )
            assert resumed.status == "succeeded", resumed.error
            assert integrity.check(stopped).intact
    repair = next(e for e in _entries(killed) if e["type"] == "repair")
    assert repair["data"]["unsigned_anchor"] == unsigned["seq"]


@pytest.mark.parametrize("where", ["artifact", "extra", "report.md", "manifest.json"])
def test_a_fifo_planted_in_a_bundle_is_named_not_read(
    demo_bundle: Path, tmp_path: Path, where: str
) -> None:
    """Reading a FIFO blocks for ever: verify names it instead."""
    import os

    bundle = _copy(demo_bundle, tmp_path)
    if where == "artifact":
        target = next((bundle / "artifacts").rglob("grants.json"))
    elif where == "extra":
        target = bundle / "artifacts" / "planted"
    else:
        target = bundle / where
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    problems = integrity.verify(bundle)
    relative = target.relative_to(bundle).as_posix()
    assert any(p.startswith(f"{relative}: ") for p in problems), problems


def test_resume_of_a_folder_that_is_no_bundle_is_one_line(tmp_path: Path) -> None:
    done = cli("resume", tmp_path)
    assert done.exit_code == 2
    assert (
        done.stderr.strip()
        == f"kmsir: error: {tmp_path}: not an evidence bundle (no journal.jsonl)"
    )


def test_an_unfinished_bundle_is_not_exported(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(demo_bundle, tmp_path)
    _cut(bundle, 3)  # run-finished and the two report records: as if it died finishing
    for name in ("manifest.json", "report.md", "report.html"):
        (bundle / name).unlink()
    done = cli("export", bundle, "--out", tmp_path / "u.tar.gz")
    assert done.exit_code == 1
    assert "not exported:" in done.stderr and "cannot be proven" in done.stderr
    assert not (tmp_path / "u.tar.gz").exists()
