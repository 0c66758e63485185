"""Render a bundle's incident report from the bundle alone (never AWS): Markdown or HTML.

``context.build_context`` turns the bundle's view of its journal (``evidence.view.RunView``),
its manifest and its artifacts into a plain template context (documented in the README);
``render`` feeds it to a Jinja2 template from ``templates/`` or the user's own, in the
bounded sandbox of ``kmsir.playbook.templating`` (a time budget, size limits, no Python
internals, a curated set of filters). Everything that came from AWS or CloudTrail is
attacker-controlled: HTML templates autoescape it, the Markdown filters neutralise it (no raw
HTML, no links, no table breaking), and in both every value output shows terminal controls
and bidi overrides as escapes (``inert.visible``).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Undefined

from kmsir import __version__, resources
from kmsir.errors import TemplateError, UsageError
from kmsir.evidence import bundle as evidence
from kmsir.evidence.derived import record_report
from kmsir.evidence.manifest import Bundle
from kmsir.report.context import build_context
from kmsir.report.redact import Redactor

__all__ = ["FORMATS", "build_context", "md_code", "md_code_text", "md_inline", "render", "write"]

FORMATS = ("md", "html")

#: Characters that could start Markdown markup inline: emphasis, code, links/images ([ ]),
#: raw HTML and autolinks (<), table cells (|), strikethrough (~), entities (&), headings
#: (#) and escapes themselves.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~&#])")
#: What GFM's autolink extension turns into links: ``scheme://``, ``www.``, ``mailto:``.
_AUTOLINK = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{0,31})(:)(?=//)|\b(www|mailto|xmpp)([.:])")
#: Line-start markers (a list, a block quote, a setext heading, a numbered list).
_LINE_START = re.compile(r"^([-+=>]|\d{1,9}[.)])")


def md_inline(value: Any) -> str:
    """Text safe anywhere in a Markdown line or table cell: one line, no markup, no links."""
    text = "" if value is None or isinstance(value, Undefined) else str(value)
    text = " ".join(text.split())  # newlines and tabs would end a table row
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _AUTOLINK.sub(lambda m: f"{m[1]}\\:" if m[1] else f"{m[3]}\\{m[4]}", text)
    text = text.replace("@", "@\u200b")  # an email autolink needs "@" right before a domain
    return _LINE_START.sub(lambda m: m[0][:-1] + "\\" + m[0][-1], text)


def md_code(value: Any) -> str:
    """Text as inline code in a table cell (ids, ARNs, hashes): backticks and pipes cannot
    escape it (GFM ends a cell at a pipe even inside code, so it is escaped)."""
    return _code(value, cell=True)


def md_code_text(value: Any) -> str:
    """Text as inline code outside tables: pipes stay as they are."""
    return _code(value, cell=False)


def _code(value: Any, *, cell: bool) -> str:
    empty = value is None or isinstance(value, Undefined)
    text = " ".join(("" if empty else str(value)).split()).replace("`", "'")
    if cell:
        text = text.replace("|", "\\|")
    return f"`{text}`" if text else ""


#: The Markdown filters report templates may use, besides the sandbox's own.
FILTERS = {"md": md_inline, "code": md_code, "codetext": md_code_text}


def render(
    bundle_root: Path,
    *,
    fmt: str = "md",
    template: Path | None = None,
    now: datetime | None = None,
    redact: bool = False,
) -> str:
    """Render the report of the bundle at ``bundle_root`` (``now``: when inverses expire)
    with a built-in template or ``template``, in the bounded sandbox; ``redact``: names,
    ids and addresses replaced with pseudonyms (``report.redact``)."""
    from kmsir.playbook import templating  # jinja2, imported when a report is rendered

    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    bundle = Bundle.open(bundle_root)
    if bundle.view.meta is not None and bundle.view.meta.facilitates is not None:
        raise UsageError(
            f"{bundle_root} is a tabletop facilitator's bundle (its actions, not an incident "
            "response): kmsir tabletop debrief PLAYERS-BUNDLE --facilitator BUNDLE reports on it"
        )
    if template is not None:
        # escaped unless the template says it makes Markdown or text: a page named mine.j2
        # must not carry attacker text raw
        html = fmt == "html" or not any(k in template.name for k in (".md", ".txt"))
        path, name = template, template.name
    else:
        html, name = fmt == "html", f"report.{fmt}.j2"
        path = resources.templates_dir() / name
    source = _read_template(path, templating.REPORT_MAX_SOURCE)
    context = build_context(bundle, now=now)
    redactor = Redactor.of(context) if redact else None
    if redactor is not None:
        context = redactor.context(context)
    try:
        text = templating.render_report(source, context, name=name, html=html, filters=FILTERS)
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    return redactor.scrub(text) if redactor is not None else text


def _read_template(path: Path, limit: int) -> str:
    """The text of a template file, refused past ``limit`` bytes before reading it all."""
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"--template {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--template {path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise UsageError(f"--template {path}: larger than {limit:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--template {path}: not UTF-8 text (byte {exc.start})") from None


def write(
    bundle_root: Path,
    *,
    fmt: str = "md",
    template: Path | None = None,
    out: Path | None = None,
    redact: bool = False,
) -> Path:
    """Render and write the report: into the bundle, recorded in its journal (the sha256, the
    kmsir version and the template's sha256, for ``verify``), or to ``out`` (recorded nowhere).
    A redacted report is never written into the bundle: it needs ``out``. ``out`` is never in
    the bundle, nor a link to one of its files (``_check_out``).
    """
    if redact and out is None:
        raise UsageError("a redacted report is written outside the bundle: give --out FILE")
    if out is not None:
        _check_out(bundle_root, out, redact=redact)
    text = render(bundle_root, fmt=fmt, template=template, redact=redact).encode()
    if out is None:
        source = template or resources.templates_dir() / f"report.{fmt}.j2"
        details = {
            "format": fmt,
            "kmsir": __version__,
            "template": template.name if template else f"report.{fmt}.j2 (built in)",
            "template_sha256": evidence.sha256_hex(source.read_bytes()),
        }
        return record_report(bundle_root, f"report.{fmt}", text, details)
    try:
        out.write_bytes(text)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return out


def _check_out(bundle_root: Path, out: Path, *, redact: bool) -> None:
    """Refuse an ``--out`` that resolves into the bundle (it would overwrite evidence, or
    plant a file the journal does not record: ``verify`` would say TAMPERED) or that is a
    hard link to one of the bundle's files (written through, it would change that file)."""
    root, target = bundle_root.resolve(), out.resolve()
    inside = target == root or root in target.parents
    if not inside and target.is_file() and target.stat().st_nlink > 1:
        inside = any(
            p.is_file() and not p.is_symlink() and p.samefile(target) for p in root.rglob("*")
        )
    if inside:
        instead = "printed" if redact else "re-rendered in the bundle and recorded"
        raise UsageError(
            f"--out {out}: inside the bundle {bundle_root} (or linked to one of its files); "
            f"write the report outside it (without --out it is {instead})"
        )
