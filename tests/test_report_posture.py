"""The report's posture section, from bundles of real ``kms.audit`` runs against moto.

The review's checks are the rules of practices 1-8 (tested with their practices); here one
stand-in rule, failing every customer-managed key whose rotation is off, makes the
failures these tests need whatever those rules find in a fresh moto account. Everything the
review names (resources, details, waiver reasons) is attacker-influenced: the section shows
it escaped in HTML and as plain text in Markdown, controls visible, tables whole.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from kmsir import inert, report
from kmsir.actions import audit as audit_action
from kmsir.actions.audit.context import AuditContext
from kmsir.actions.audit.rules import Result, Rule
from kmsir.aws import ClientFactory
from kmsir.cli.audit import review_path
from kmsir.posture import Check, Review

from .conftest import PLAYBOOKS, REPO, load_playbook, run_playbook
from .test_report import rendered_with_whole_tables

ROTATION_DOC = "https://docs.aws.amazon.com/kms/latest/developerguide/rotate-keys.html"
FIX = "Turn on automatic rotation: aws kms enable-key-rotation --key-id KEY_ID"


def _rotation_off(audit: AuditContext) -> Iterator[Result]:
    passing = []
    for key in audit.customer_keys():
        if key.rotation is not None and not key.rotation.get("KeyRotationEnabled"):
            yield Result("fail", (key.arn,), detail=f"rotation is off on {key.label()}")
        else:
            passing.append(key.arn)
    if passing:  # as the real checks do: what passes is named (a fix is a pass, judged)
        yield Result("pass", tuple(passing))


#: The stand-in rule: a failure per customer-managed key without automatic rotation.
ROTATION = Rule(
    id="rotation-enabled",
    practice=4,
    title="Automatic rotation is enabled",
    severity="high",
    fix=FIX,
    doc=ROTATION_DOC,
    judge=_rotation_off,
)


@pytest.fixture
def reviewing(moto_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> ClientFactory:
    monkeypatch.setattr(audit_action, "RULES", (ROTATION,))
    return moto_clients


def kms() -> Any:
    return boto3.client("kms", region_name="eu-west-1")


def new_key(alias: str, *, rotation: bool) -> str:
    client = kms()
    arn = client.create_key(Description=alias)["KeyMetadata"]["Arn"]
    client.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
    if rotation:
        client.enable_key_rotation(KeyId=arn)
    return str(arn)


def review(clients: ClientFactory, evidence: Path, **inputs: Any) -> Path:
    """The bundle of a run of the ``kms-posture-review`` playbook (one ``kms.audit`` step)."""
    loaded = load_playbook(PLAYBOOKS / "kms-posture-review.yaml")
    result = run_playbook(loaded, clients, evidence, inputs=inputs)
    assert result.status == "succeeded", result.error
    return result.bundle


def section(text: str, start: str, end: str) -> str:
    assert text.count(start) == 1, start
    return text.split(start, 1)[1].split(end, 1)[0]


class Balanced(html.parser.HTMLParser):
    """Every element the page opens is closed, in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()


def balanced(page: str) -> Balanced:
    parser = Balanced()
    parser.feed(page)
    parser.close()
    assert parser.open == [], parser.open
    return parser


def test_the_report_names_failing_resources_with_their_fix_and_page(
    reviewing: ClientFactory, tmp_path: Path
) -> None:
    bad = new_key("legacy-exports", rotation=False)
    good = new_key("payments", rotation=True)
    bundle = review(reviewing, tmp_path)

    text = report.render(bundle, fmt="md")
    posture = section(text, "## Posture review", "## Responder notes")
    assert "Step `review` checked account `123456789012` in `eu-west-1` (2 key(s)" in posture
    row = next(line for line in posture.splitlines() if line.startswith("| 4 |"))
    assert row.startswith("| 4 | Rotate key material | **1** |")
    assert "**Practice 4: Rotate key material**" in posture
    failure = next(line for line in posture.splitlines() if bad in line)
    assert failure.startswith("| high | `rotation-enabled`: Automatic rotation is enabled")
    assert f"`{bad}`" in failure
    assert "automatic rotation: aws kms enable-key-rotation --key-id KEY\\_ID |" in failure
    assert f"`{ROTATION_DOC}`" in failure
    assert good not in posture  # a passing key is no failure
    assert "### Trend" not in posture  # no earlier review given
    rendered_with_whole_tables(text)

    page = report.render(bundle, fmt="html")
    shown = section(page, "<h2>Posture review</h2>", "<h2>Responder notes</h2>")
    assert f"<code>{bad}</code>" in shown and FIX in shown
    assert f'<a href="{ROTATION_DOC}" rel="noreferrer">{ROTATION_DOC}</a>' in shown
    assert '<span class="sev sev-high">high</span>' in shown
    assert "<svg" not in shown  # the trend chart needs an earlier review
    balanced(page)


def test_a_review_compared_with_an_earlier_one_shows_the_trend(
    reviewing: ClientFactory, tmp_path: Path
) -> None:
    fixed = new_key("legacy-exports", rotation=False)
    unchanged = new_key("batch", rotation=False)
    earlier = review(reviewing, tmp_path / "before")
    kms().enable_key_rotation(KeyId=fixed)
    new = new_key("reports", rotation=False)
    bundle = review(reviewing, tmp_path / "after", compare=str(review_path(earlier)))

    text = report.render(bundle, fmt="md")
    trend = section(text, "### Trend", "## Responder notes")
    assert ": 1 new failure(s), 1 fixed, 1 unchanged." in trend
    assert "| 4 | Rotate key material | 2 | 2 | 0 |" in trend
    rows = {line.split(" | ")[0]: line for line in trend.splitlines() if line.startswith("| ")}
    assert f"`{new}`" in rows["| new"] and f"`{fixed}`" in rows["| fixed"]
    assert f"`{unchanged}`" in rows["| unchanged"]
    rendered_with_whole_tables(text)

    page = report.render(bundle, fmt="html")
    chart = section(page, '<svg role="img" aria-label="Failures per practice', "</svg>")
    assert "<title>practice 4: 2 failure(s) before</title>" in chart
    assert "<title>practice 4: 2 failure(s) now</title>" in chart
    assert "<script" not in page and "http" not in chart  # inline: nothing loaded
    balanced(page)


def test_waived_failures_are_listed_and_an_expired_waiver_no_longer_waives(
    reviewing: ClientFactory, tmp_path: Path
) -> None:
    accepted = new_key("legacy-exports", rotation=False)
    lapsed = new_key("batch", rotation=False)
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(
        f"""\
- check: rotation-enabled
  resource: {accepted}
  reason: replaced by the exports-v2 key in Q1 (SEC-812)
  expires: 2099-03-31
- check: rotation-*
  resource: {lapsed.rsplit("/", 1)[0]}/*
  reason: batch keys rotate by hand
  expires: 2020-01-31
"""
    )
    bundle = review(reviewing, tmp_path / "evidence", waivers=str(waivers))

    checks = Review.loads(review_path(bundle).read_bytes()).checks
    assert {(c.status, c.resources) for c in checks if c.id == "rotation-enabled"} == {
        ("waived", (accepted,)),
        ("fail", (lapsed,)),
    }
    text = report.render(bundle, fmt="md")
    waived = section(text, "### Waived", "## Responder notes")
    (row,) = [line for line in waived.splitlines() if accepted in line]
    assert "replaced by the exports-v2 key in Q1 (SEC-812) | 2099-03-31 |" in row
    assert f"`{waivers}:1`" in row
    failures = section(text, "### Failures", "### Waived")
    (row,) = [line for line in failures.splitlines() if lapsed in line]
    assert "waivers.yaml:5 expired 2020-01-31: batch keys rotate by hand" in row
    assert accepted not in failures
    assert "replaced by the exports-v2 key" in report.render(bundle, fmt="html")


#: Markup, a table breaker, a link, a heading, terminal controls and a bidi override.
HOSTILE = (
    '<script>alert("PWNED")</script><img src=x onerror=alert(1)>| cell |\n# PWNED heading\n'
    "[click](javascript:alert(1)) https://evil.example **bold** \x1b[2J\x1b]0;owned\x07\u202egnp"
)


def hostile_review() -> Review:
    base = {"practice": 2, "fix": HOSTILE, "detail": HOSTILE, "doc": "javascript:alert(1)"}
    checks = [
        Check(
            id="key-policy-public",
            title=HOSTILE,
            status="fail",
            severity='high" onmouseover="alert(1)',
            resources=(HOSTILE, "arn:aws:kms:x"),
            **base,
        ),
        Check(
            id=HOSTILE,
            title="t",
            status="waived",
            severity="high",
            resources=(HOSTILE,),
            waiver={"reason": HOSTILE, "expires": HOSTILE, "where": HOSTILE},
            **base,
        ),
        Check(
            id="grant-age",
            title="t",
            status="could-not-check",
            severity="low",
            resources=(HOSTILE,),
            missing=HOSTILE,
            **base,
        ),
    ]
    item = {
        "id": HOSTILE,
        "resource": HOSTILE,
        "practice": 2,
        "severity": HOSTILE,
        "title": HOSTILE,
    }
    comparison = {
        "since": HOSTILE,
        "new": [item],
        "fixed": [item, "not an item"],
        "unchanged": "not a list",
        "trend": {"2": {"before": "9<script>", "now": 3}, "4": {"before": -5, "now": True}},
    }
    return Review(
        checks=checks,
        scope={"account": HOSTILE, "region": HOSTILE, "keys": HOSTILE},
        ruleset={"version": HOSTILE},
        comparison=comparison,
    )


def replace_review(bundle: Path, data: bytes) -> None:
    path = review_path(bundle)
    path.chmod(0o644)
    path.write_bytes(data)


def test_hostile_review_text_stays_inert(reviewing: ClientFactory, tmp_path: Path) -> None:
    bundle = review(reviewing, tmp_path)
    replace_review(bundle, hostile_review().dumps())

    text = report.render(bundle, fmt="md")
    assert not inert.has_hidden(text)
    assert "\\x1b[2J" in text and "\\u202e" in text  # shown, not obeyed
    page_md = rendered_with_whole_tables(text)
    for markup in ("<script", "<img", "<a ", "<strong>bold"):
        assert markup not in page_md, markup
    assert not re.search(r"<h\d>[^<]*PWNED", page_md)

    page = report.render(bundle, fmt="html")
    assert not inert.has_hidden(page)
    shown = section(page, "<h2>Posture review</h2>", "<h2>Responder notes</h2>")
    assert "&lt;script&gt;alert(&#34;PWNED&#34;)&lt;/script&gt;" in shown
    for raw in ("<script", "<img", '<a href="javascript'):
        assert raw not in shown, raw
    assert 'class="sev sev-info"' in shown  # an unknown severity is no class name
    assert "javascript:" not in "".join(re.findall(r'href="[^"]*"', shown))
    template = (REPO / "templates" / "report.html.j2").read_text().lower()
    for tag, attrs in balanced(page).tags:  # only the template's own markup
        assert f"<{tag}" in template, tag
        assert all(f' {name}="' in template for name, _ in attrs), attrs
        assert not [name for name, _ in attrs if name.startswith("on")], attrs
    trend = section(text, "### Trend", "## Responder notes")
    assert "| 2 | Least-privilege access to keys | 0 | 3 | +3 |" in trend  # "9<script>" is 0
    assert "| 4 | Rotate key material | 0 | 0 | 0 |" in trend  # -5 and True are not counts


def test_an_unreadable_review_is_said_not_hidden(reviewing: ClientFactory, tmp_path: Path) -> None:
    bundle = review(reviewing, tmp_path)
    replace_review(bundle, b'{"checks": "no"}')
    text = report.render(bundle, fmt="md")
    posture = section(text, "## Posture review", "## Responder notes")
    assert "The review of step `review` could not be read: " in posture
    assert 'not a posture review (no "checks" list)' in posture
    assert "could not be read" in report.render(bundle, fmt="html")
