"""`kmsir report BUNDLE --redact`: a report to publish outside the team, with account ids,
addresses, principal and key names replaced by stable, typed pseudonyms, rendered from a
bundle that stays byte for byte as it was."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir import report as reports
from kmsir.errors import UsageError
from kmsir.evidence import integrity
from kmsir.report.redact import Redactor

from .clikit import cli

PSEUDONYM = re.compile(
    r"^(account|ip|key|alias|user|role|session|principal|access-key|principal-id|host|path)"
    r"-\d+$"
)
#: What a word is made of in these checks (as IAM names, key ids and addresses are).
WORD = r"[\w.@+-]"


def appears(value: str, text: str) -> bool:
    """``value`` stands in ``text`` as a whole word (``sync`` is not in ``backup-sync``)."""
    return re.search(rf"(?<!{WORD}){re.escape(value)}(?!{WORD})", text) is not None


def _events(bundle: Path) -> Iterator[dict[str, Any]]:
    for path in bundle.glob("artifacts/*/events.jsonl.gz"):
        with gzip.open(path, "rt") as lines:
            yield from (json.loads(line) for line in lines)


def secrets_of(bundle: Path) -> dict[str, set[str]]:
    """What the bundle says about the victim, read from its own files: the values a shared
    report must not show."""
    texts = [p.read_text() for p in bundle.rglob("*.json")]
    texts.append((bundle / "journal.jsonl").read_text())
    events = list(_events(bundle))
    texts.extend(json.dumps(e) for e in events)
    arns = {a for t in texts for a in re.findall(r"arn:aws:[a-z]+:[\w+=,.@/:-]*[\w+=@/-]", t)}
    found: dict[str, set[str]] = {
        "account": {a for t in texts for a in re.findall(r"(?<!\d)\d{12}(?!\d)", t)},
        "ip": {e["sourceIPAddress"] for e in events if e.get("sourceIPAddress")},
        "key": {
            json.loads(p.read_text())["KeyMetadata"]["KeyId"]
            for p in bundle.glob("artifacts/*/key.json")
        },
        "alias": {
            a["AliasName"].removeprefix("alias/")
            for p in bundle.glob("artifacts/*/aliases.json")
            for a in json.loads(p.read_text())["Aliases"]
            if not a["AliasName"].startswith("alias/aws/")
        },
        "role": set(),
        "session": set(),
        "user": set(),
    }
    for arn in arns:
        resource = arn.split(":", 5)[5]
        kind, _, rest = resource.partition("/")
        if kind == "assumed-role":
            role, _, session = rest.partition("/")
            found["role"].add(role)
            found["session"].add(session)
        elif kind in ("role", "user"):
            found[kind].add(rest.rpartition("/")[2])
    for event in events:
        identity = event.get("userIdentity") or {}
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        found["role"].update(filter(None, [issuer.get("userName")]))
        found["user"].update(filter(None, [identity.get("userName")]))
    return found


def digests(bundle: Path) -> dict[str, str]:
    return {
        str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(bundle.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def redacted(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both formats rendered with --redact through the CLI, and the bundle's files before."""
    out = tmp_path_factory.mktemp("shared")
    before = digests(demo_bundle)
    texts = {}
    for fmt in ("md", "html"):
        target = out / f"report.{fmt}"
        ran = cli("report", demo_bundle, "--format", fmt, "--redact", "--out", target)
        assert ran.exit_code == 0, ran.output
        assert ran.stdout.strip() == str(target)
        texts[fmt] = target.read_text()
    printed = cli("report", demo_bundle, "--redact")
    assert printed.exit_code == 0, printed.output
    return {"before": before, "printed": printed.stdout, **texts}


def test_the_bundle_is_untouched_and_still_verifies(
    demo_bundle: Path, redacted: dict[str, Any]
) -> None:
    assert digests(demo_bundle) == redacted["before"]
    checked = integrity.check(demo_bundle)
    assert checked.problems == [] and checked.intact


@pytest.mark.parametrize("fmt", ["md", "html", "printed"])
def test_no_account_address_key_or_principal_of_the_bundle_is_shown(
    demo_bundle: Path, redacted: dict[str, Any], fmt: str
) -> None:
    found = secrets_of(demo_bundle)
    # the demo has them all, or the test would prove nothing
    assert {k for k, v in found.items() if v} == {
        "account",
        "ip",
        "key",
        "alias",
        "role",
        "session",
        "user",
    }
    assert {"123456789012", "444455556666"} <= found["account"]
    assert {"ci-deploy", "backup-sync", "payments-app"} <= found["role"]
    unredacted = reports.render(demo_bundle, fmt="md" if fmt == "printed" else fmt)
    text = redacted[fmt]
    shown = {(k, v) for k, values in found.items() for v in values if appears(v, unredacted)}
    assert len(shown) >= 12  # accounts, addresses, the key, its alias, roles, sessions, user
    for kind, value in shown:
        assert not appears(value, text), f"{kind} {value!r} shown in the {fmt} report"
    # the AWS-shaped ids CloudTrail carries go too
    assert not re.search(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16,}\b", text)


def _word_pairs(plain: str, hidden: str) -> Iterator[tuple[str, str]]:
    """The words of the report that redaction changed, paired with what replaced them, from
    the lines that keep their shape (a pseudonym is one word, as the value it replaces)."""
    split = re.compile(rf"{WORD}+|[^\w.@+-]+")
    lines = list(zip(plain.splitlines(), hidden.splitlines(), strict=True))
    aligned = 0
    for before, after in lines:
        words, replaced = split.findall(before), split.findall(after)
        if len(words) != len(replaced):
            continue
        aligned += 1
        yield from ((w, r) for w, r in zip(words, replaced, strict=True) if w != r)
    assert aligned > 0.95 * len(lines)


def test_pseudonyms_are_stable_typed_and_the_same_in_both_formats(
    demo_bundle: Path, redacted: dict[str, Any]
) -> None:
    mapping: dict[str, set[str]] = {}
    for fmt in ("md", "html"):
        for word, pseudonym in _word_pairs(reports.render(demo_bundle, fmt=fmt), redacted[fmt]):
            mapping.setdefault(word.rstrip("."), set()).add(pseudonym.rstrip("."))
    # the same value always gets the same pseudonym, and no two values share one
    assert {w: len(p) for w, p in mapping.items() if len(p) != 1} == {}
    shown = {w: next(iter(p)) for w, p in mapping.items()}
    assert len(set(shown.values())) == len(shown)
    assert all(PSEUDONYM.match(p) for p in shown.values()), shown
    # typed: the kind of each value is the kind of its pseudonym
    found = secrets_of(demo_bundle)
    for kind in ("account", "ip", "key", "alias", "role", "session"):
        for value in found[kind] & set(shown):
            assert shown[value].startswith(f"{kind}-"), (value, shown[value])
    # the story still reads: the outside account and its role, the key they used
    assert "only account-2 loses access" in redacted["md"]
    assert "arn:aws:iam::account-2:role/role-" in redacted["md"]


def test_a_redacted_report_is_never_written_into_the_bundle(demo_bundle: Path) -> None:
    with pytest.raises(UsageError, match="outside the bundle"):
        reports.write(demo_bundle, redact=True)


@pytest.fixture
def bundle_copy(demo_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the demo bundle this test may try to spoil (the demo is shared)."""
    copy = tmp_path / "INC-test" / demo_bundle.name
    shutil.copytree(demo_bundle, copy)
    assert integrity.check(copy).problems == []
    return copy


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "plain"])
@pytest.mark.parametrize(
    "where",
    [
        "report.md",
        "manifest.json",
        "journal.jsonl",
        "artifacts/shared.md",
        "symlink-to-report.md",
        "hardlink-to-report.md",
    ],
)
def test_report_out_never_writes_into_the_bundle(
    bundle_copy: Path, tmp_path: Path, where: str, redact: bool
) -> None:
    """``--out`` inside the bundle would overwrite evidence or plant an unrecorded file
    (verify: TAMPERED); a link outside that leads to one of its files is refused too."""
    out = bundle_copy / where
    if where.startswith("symlink"):
        out = tmp_path / where
        out.symlink_to(bundle_copy / "report.md")
    elif where.startswith("hardlink"):
        out = tmp_path / where
        os.link(bundle_copy / "report.md", out)
    before = digests(bundle_copy)
    ran = cli("report", bundle_copy, *(["--redact"] if redact else []), "--out", out)
    assert ran.exit_code == 2, ran.output
    (line,) = ran.stderr.strip().splitlines()
    assert "--out" in line and "bundle" in line, line
    assert digests(bundle_copy) == before
    assert integrity.check(bundle_copy).problems == []


def test_report_out_beside_the_bundle_is_written(bundle_copy: Path) -> None:
    out = bundle_copy.parent / "shared.md"
    ran = cli("report", bundle_copy, "--redact", "--out", out)
    assert ran.exit_code == 0, ran.output
    assert "account-1" in out.read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # shapes, anywhere
        ("from 2001:db8::1.", "from ip-1."),
        ("::ffff:192.0.2.1 and 192.0.2.1", "ip-1 and ip-2"),
        ("at 2026-12-02T00:16:08Z and 00:16:08 ::", "at 2026-12-02T00:16:08Z and 00:16:08 ::"),
        ("account 123456789012, not 1234567890123", "account account-1, not 1234567890123"),
        ("AKIAIOSFODNN7EXAMPLE / AROAB72E0703DAA73AA9C:s1", "access-key-1 / principal-id-1:s1"),
        ("mrk-0123456789abcdef0123456789abcdef", "key-1"),
        # ARNs, their parts by what they are
        (
            "arn:aws:sts::123456789012:assumed-role/ci-deploy/build-4821 did it.",
            "arn:aws:sts::account-1:assumed-role/role-1/session-1 did it.",
        ),
        ("arn:aws:iam::123456789012:user/ops/alice", "arn:aws:iam::account-1:user/ops/user-1"),
        (
            "arn:aws:kms:eu-west-1:123456789012:alias/team/payments",
            "arn:aws:kms:eu-west-1:account-1:alias/alias-1",
        ),
        ("arn:aws:iam::aws:policy/AWSDenyAll", "arn:aws:iam::aws:policy/AWSDenyAll"),
        ("alias/aws/s3 and alias/payments-prod", "alias/aws/s3 and alias/alias-1"),
        # an account id inside a name, delimited by - _ . / : or the ends, never inside a
        # longer run of digits or hex
        ("aws-cloudtrail-logs-123456789012-3f2a", "aws-cloudtrail-logs-account-1-3f2a"),
        ("kmsir-sandbox-trail-123456789012", "kmsir-sandbox-trail-account-1"),
        (
            "s3://b/AWSLogs/123456789012_CloudTrail_eu-west-1_x.json.gz 123456789012.dkr.ecr",
            "s3://b/AWSLogs/account-1_CloudTrail_eu-west-1_x.json.gz account-1.dkr.ecr",
        ),
        (
            "arn:aws:s3:::aws-cloudtrail-logs-123456789012-3f2a/AWSLogs/123456789012/x",
            "arn:aws:s3:::aws-cloudtrail-logs-account-1-3f2a/AWSLogs/account-1/x",
        ),
        (
            "b-1234567890123 f123456789012 123456789012a 0x123456789012 ab-123456789012ff",
            "b-1234567890123 f123456789012 123456789012a 0x123456789012 ab-123456789012ff",
        ),
        # key ids in any case, wherever they stand, the same key the same pseudonym
        (
            "arn:aws:kms:eu-west-1:123456789012:key/21bade02-6a6a-4768-b2ed-66ffdcc99396 is "
            "21BADE02-6A6A-4768-B2ED-66FFDCC99396, see kmsir-deny-21bade02-6a6a-4768-b2ed-"
            "66ffdcc99396.",
            "arn:aws:kms:eu-west-1:account-1:key/key-1 is key-1, see kmsir-deny-key-1.",
        ),
        ("note: 0a1b2c3d-4e5f-4a6b-8c7d-000012345678 disabled", "note: key-1 disabled"),
        (
            "MRK-0123456789ABCDEF0123456789ABCDEF, mrk-0123456789abcdef0123456789abcdef",
            "key-1, key-1",
        ),
        # a name learned from an ARN, then wherever it stands as a word
        (
            "arn:aws:iam::123456789012:role/ci-deploy; RoleName=ci-deploy, ci-deploy. ci-deployer",
            "arn:aws:iam::account-1:role/role-1; RoleName=role-1, role-1. ci-deployer",
        ),
    ],
)
def test_values_are_found_by_their_shape(text: str, expected: str) -> None:
    redactor = Redactor.of({"text": text})
    assert redactor.context({"text": text}) == {"text": expected}


def test_names_are_found_by_their_field_and_the_custody_fields_only_where_they_stand() -> None:
    context = {
        "event": {
            "userIdentity": {"userName": "alice", "sessionContext": {}},
            "requestParameters": '{"roleName": "deployer", "keyId": '
            '"21bade02-6a6a-4768-b2ed-66ffdcc99396"}',
        },
        "before": {"roles": {"deployer": {"inline_policies": []}}},
        "grants": [{"grantee": "kms.amazonaws.com"}, {"grantee": "partner-app"}],
        "custody": {"host": "vm", "local_user": "root", "location": "/home/alice/evidence"},
        "summary": "alice asked deployer about 21bade02-6a6a-4768-b2ed-66ffdcc99396 as root on vm",
        "status": "succeeded",
    }
    redactor = Redactor.of(context)
    shown = redactor.context(context)
    assert shown["event"]["userIdentity"]["userName"] == "user-1"
    assert shown["before"] == {"roles": {"role-1": {"inline_policies": []}}}
    assert json.loads(shown["event"]["requestParameters"]) == {
        "roleName": "role-1",
        "keyId": "key-1",
    }
    assert shown["grants"] == [{"grantee": "kms.amazonaws.com"}, {"grantee": "principal-1"}]
    assert shown["custody"] == {"host": "host-1", "local_user": "user-2", "location": "path-1"}
    # the local user "root" and the host are hidden in their fields, not in every sentence
    assert shown["summary"] == "user-1 asked role-1 about key-1 as root on vm"
    assert shown["status"] == "succeeded"


def test_the_rendered_text_sweep_leaves_markup_alone() -> None:
    """A principal named like an HTML tag is hidden in the context, never in the page's
    markup: the sweep after rendering replaces only ids, accounts, addresses and ARNs."""
    context = {"who": "arn:aws:iam::123456789012:role/table"}
    redactor = Redactor.of(context)
    assert redactor.context(context) == {"who": "arn:aws:iam::account-1:role/role-1"}
    page = "<table><tr><td>table 123456789012 10.0.0.1</td></tr></table>"
    assert redactor.scrub(page) == "<table><tr><td>table account-1 ip-1</td></tr></table>"
