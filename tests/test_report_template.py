"""Report templates, built in and custom, in the bounded sandbox: stopped, refused in one line,
and nothing an attacker wrote reaches the reader's terminal as a control sequence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kmsir import inert, report, resources
from kmsir.evidence.manifest import Bundle
from kmsir.playbook import templating
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import cli
from .conftest import load_playbook, run_playbook

#: ESC[2J (clear screen), an OSC 8 hyperlink, an OSC 0 window title, U+202E (right-to-left
#: override) and a one-byte C1 CSI: each would act on a terminal or viewer showing it raw.
CLEAR, TITLE, RTL, CSI = "\x1b[2J", "\x1b]0;owned\x07", "\u202e", "\x9b31m"
LINK = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
#: Each raw character above, as ``inert.visible`` shows it.
SHOWN = ("\\x1b", "\\x07", "\\u202e", "\\x9b")


def _yaml(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (escapes for every control character)."""
    escaped = (c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text)
    return '"' + "".join(escaped) + '"'


SCENARIO = f"""\
id: control-payloads
title: Rogue grant, with terminal control sequences in every attacker-controlled field
story: The rogue-grant story; user agent, session name and request carry escape sequences.
playbook: kms-key-compromise
region: eu-west-1
seed: 4242
inputs: {{key: alias/payments-prod, lookback: 7d}}
keys:
  payments: {{description: Payments data key, alias: alias/payments-prod, rotation: true}}
grants:
  rogue:
    key: payments
    name: backup-sync
    grantee: arn:aws:iam::444455556666:role/backup-sync
    operations: [Decrypt]
    created: -3d3h55m
identities:
  app: {{type: AssumedRole, name: payments-app, session: i-0a1b2c3d4e5f60718}}
  ci: {{type: AssumedRole, name: ci-deploy, session: build-4821}}
  outsider:
    type: AssumedRole
    account: "444455556666"
    name: backup-sync
    session: {_yaml("sync" + TITLE + RTL + "gnp.exe")}
history:
  - at: -6d
    event: Decrypt
    identity: app
    key: payments
    source_ip: 10.20.4.17
    user_agent: aws-sdk-java/2.25.11
    request: {{keyId: "{{{{ keys.payments.arn }}}}"}}
    count: 24
    every: 6h
  - at: -3d3h55m
    event: CreateGrant
    identity: ci
    key: payments
    source_ip: 203.0.113.45
    request:
      keyId: "{{{{ keys.payments.id }}}}"
      granteePrincipal: arn:aws:iam::444455556666:role/backup-sync
      operations: [Decrypt]
    response: {{grantId: "{{{{ grants.rogue.id }}}}"}}
  - at: -3d2h
    event: Decrypt
    identity: outsider
    key: payments
    source_ip: 192.0.2.200
    user_agent: {_yaml("curl" + CLEAR + LINK + CSI)}
    request:
      keyId: "{{{{ keys.payments.arn }}}}"
      encryptionContext: {{note: {_yaml(RTL + "txt.exe" + CLEAR)}}}
    count: 30
    every: 1h
"""

PLAYBOOK = f"""\
id: hostile-text
title: {_yaml("Key compromise" + CLEAR + TITLE)}
steps:
  - {{id: snapshot, action: kms.snapshot, with: {{key: alias/payments-prod}}}}
  - id: collect
    action: cloudtrail.collect
    with: {{key: "{{{{ steps.snapshot.arn }}}}", source: lookup, since: 7d}}
  - id: findings
    action: cloudtrail.findings
    with: {{events: collect, key: "{{{{ steps.snapshot.arn }}}}", window: 4d}}
  - id: decide
    action: ask
    with:
      question: {_yaml("Contain it?" + RTL)}
      choices: [{_yaml("revoke" + CSI)}, none]
  - id: tell
    action: note
    with: {{text: {_yaml("see " + LINK + " " + RTL + "fdp.exe" + CLEAR)}}}
"""


@pytest.fixture(scope="module")
def hostile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox run whose CloudTrail history and playbook texts carry terminal controls."""
    root = tmp_path_factory.mktemp("controls")
    (root / "scenario.yaml").write_text(SCENARIO)
    (root / "playbook.yaml").write_text(PLAYBOOK)
    with Sandbox(scenarios.load(str(root / "scenario.yaml"))) as sandbox:
        result = run_playbook(
            load_playbook(root / "playbook.yaml"),
            sandbox.client_factory(),
            root / "evidence",
            answers={"decide": "revoke" + CSI},
        )
    assert result.status == "succeeded", result.error
    return result.bundle


@pytest.fixture(autouse=True)
def _unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """No outcome here depends on the machine's load: only the tests that lower the time
    budgets on purpose can reach them."""
    monkeypatch.setattr(templating, "MAX_SECONDS", 600.0)
    monkeypatch.setattr(templating, "REPORT_MAX_SECONDS", 600.0)


def _hidden(text: str) -> list[str]:
    return sorted({repr(c) for c in text if inert.has_hidden(c)})


CUSTOM = (
    "{{ manifest.playbook.title }}\n{% for f in findings %}{% for e in f.events %}"
    "{{ e.user_agent }} {{ e.principal }} {{ e.request }}\n{% endfor %}{% endfor %}"
    "{% for n in notes %}{{ n.data.text }}{% endfor %}"
    "{% for e in timeline %}{{ e.detail }}\n{% endfor %}"
)


@pytest.mark.parametrize("custom", [None, "mine.md.j2", "mine.html.j2"])
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_terminal_controls_never_reach_a_report_raw(
    hostile_bundle: Path, tmp_path: Path, fmt: str, custom: str | None
) -> None:
    template = None
    if custom is not None:
        template = tmp_path / custom
        template.write_text(CUSTOM)
    text = report.render(hostile_bundle, fmt=fmt, template=template)
    assert _hidden(text) == []
    for shown in SHOWN:  # each one is there for the reader to see, written as an escape
        assert shown in text, shown
    # where they came from: the title, the user agent, the session name, the note, the answer
    # (Markdown text escapes brackets: ``\[``)
    for shown in (
        r"Key compromise\\x1b\\?\[2J\\x1b\\?\]0;owned\\x07",
        r"curl\\x1b\\?\[2J\\x1b\\?\]8;;https",
        r"sync\\x1b\\?\]0;owned\\x07\\u202egnp\.exe",
        r"\\u202efdp\.exe",
        r"revoke\\x9b31m",
    ):
        assert re.search(shown, text), shown


def test_markup_from_filters_stays_markup_and_is_escaped_once(
    hostile_bundle: Path, tmp_path: Path
) -> None:
    template = tmp_path / "mine.html.j2"
    template.write_text(
        "<p>{{ {'ua': '<b>' ~ manifest.playbook.title} | tojson }}</p>"
        "<p>{{ manifest.playbook.title | e }}</p><p>{{ '<i>' }}</p>"
    )
    text = report.render(hostile_bundle, fmt="html", template=template)
    assert _hidden(text) == []
    assert '{"ua": "\\u003cb\\u003eKey compromise\\u001b[2J' in text  # tojson's own escapes
    assert "<p>Key compromise\\x1b[2J\\x1b]0;owned\\x07</p>" in text  # |e: escaped once
    assert "<p>&lt;i&gt;</p>" in text


@pytest.fixture
def template_file(tmp_path: Path) -> Path:
    return tmp_path / "my.j2"


def _report(bundle: Path, template: Path, source: str, *, fmt: str = "md") -> tuple[int, str, str]:
    template.write_text(source)
    out = template.with_name("out.txt")
    ran = cli("report", bundle, "--format", fmt, "--template", template, "--out", out)
    return ran.exit_code, out.read_text() if ran.exit_code == 0 else "", ran.stderr


def test_a_template_that_would_loop_for_hours_is_stopped(
    demo_bundle: Path, template_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10^10 iterations with an empty body: no attribute, call or filter to check the time at
    monkeypatch.setattr(templating, "REPORT_MAX_SECONDS", 0.2)
    code, _, err = _report(
        demo_bundle,
        template_file,
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    )
    assert code == 2
    assert err == (
        "kmsir: error: report template my.j2 (line 1): refused by the sandbox: "
        "took longer than 0.2 s\n"
    )


def test_every_loop_iteration_checks_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = 0
    real = templating._tick

    def counted() -> None:
        nonlocal ticks
        ticks += 1
        real()

    monkeypatch.setattr(templating, "_tick", counted)
    source = "{% for a in range(300) %}{% for b in range(300) %}{% endfor %}{% endfor %}"
    assert templating.render_report(source, {}, name="t", html=False, filters={}) == ""
    assert ticks >= 300 * 300


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ('{{ "".__class__ }}', "refers to '__class__': Python internals are not reachable"),
        ("{{ ''['__cla' ~ 'ss__'] }}", "access to attribute '__class__' of 'str' object"),
        ("{% include 'report.md.j2' %}", "'include' blocks are not allowed in report templates"),
        ("{{ manifest | attr('x') }}", "No filter named 'attr'"),
        ("{{ lipsum() }}", "'lipsum' is undefined"),
        ("{{ 1 + 'a' }}", "TypeError: unsupported operand"),
        ("{% for x in y %}", "Unexpected end of template"),
    ],
)
def test_a_refused_template_is_one_line_naming_it(
    demo_bundle: Path, template_file: Path, source: str, reason: str
) -> None:
    code, _, err = _report(demo_bundle, template_file, source)
    assert code == 2
    assert err.startswith("kmsir: error: report template my.j2") and reason in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_custom_templates_keep_what_reports_need(demo_bundle: Path, template_file: Path) -> None:
    context = report.build_context(Bundle.open(demo_bundle))
    code, out, err = _report(
        demo_bundle,
        template_file.with_name("mine.md.j2"),
        "# {{ manifest.incident | md }}\n"
        "{{ manifest.no_such_field.deeper }}|{{ findings | length }}\n"
        "{% set ns = namespace(chars=0) %}"
        "{% for k, n in cloudtrail.principals | dictsort %}{% for c in k %}"
        "{% set ns.chars = ns.chars + 1 %}{% endfor %}{% endfor %}{{ ns.chars }}\n"
        "{% macro row(x) %}| {{ x | code }} |{% endmacro %}{{ row('a|b') }}\n"
        "{{ '%d events, %s' | format(cloudtrail.count, '{:,}'.format(1234567)) }}\n",
    )
    assert (code, err) == (0, "")
    chars = sum(len(p) for p in context["cloudtrail"]["principals"])
    assert out == (
        f"# INC-test\n|{len(context['findings'])}\n{chars}\n| `a\\|b` |\n"
        f"{context['cloudtrail']['count']} events, 1,234,567\n"
    )


def test_the_html_report_of_150000_source_ips_lists_the_top_20(demo_bundle: Path) -> None:
    context = report.build_context(Bundle.open(demo_bundle))
    context["cloudtrail"]["source_ips"] = {
        f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}": i for i in range(150_000)
    }
    source = (resources.templates_dir() / "report.html.j2").read_text()
    text = templating.render_report(source, context, name="x", html=True, filters=report.FILTERS)
    table = text.split("<h2>CloudTrail</h2>", 1)[1].split("</table>", 1)[0]
    assert (
        table.count("<tr>") == 21 and '<code>10.2.73.239</code></td><td class="n">149999' in table
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"{{ manifest.incident }}\xff", "not UTF-8 text (byte 23)"),
        (b"x" * (templating.REPORT_MAX_SOURCE + 1), "larger than 1,048,576 bytes"),
    ],
)
def test_a_template_file_that_cannot_be_used_is_one_line(
    demo_bundle: Path, template_file: Path, content: bytes | None, message: str
) -> None:
    if content is not None:
        template_file.write_bytes(content)
    ran = cli("report", demo_bundle, "--template", template_file, "--out", template_file.parent)
    assert ran.exit_code == 2
    assert ran.stderr == f"kmsir: error: --template {template_file}: {message}\n"
