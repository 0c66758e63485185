"""Render a bundle's incident report from the bundle alone (never AWS): Markdown or HTML.

``context.build_context`` turns the journal, manifest and artifacts into a plain template
context (documented in the README); ``render`` feeds it to a Jinja2 template from
``templates/`` or the user's own. Everything that came from AWS or CloudTrail is
attacker-controlled: HTML templates autoescape it, and the Markdown filters neutralise it
(no raw HTML, no links, no table breaking).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Undefined

from kmsir import evidence, resources
from kmsir.errors import UsageError
from kmsir.report.context import build_context

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


def _environment(template_dir: Path, *, html: bool) -> Any:
    from jinja2 import ChainableUndefined, Environment, FileSystemLoader

    env = Environment(
        loader=FileSystemLoader(str(template_dir)),
        # HTML: every value is escaped unless a template marks it safe (none does). Markdown:
        # the md and code filters neutralise attacker text.
        autoescape=html,  # noqa: S701 - off only for Markdown, see above
        # A bundle may come from an older kmsir or a failed run: a missing field renders
        # empty rather than failing the whole report.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_inline
    env.filters["code"] = md_code
    env.filters["codetext"] = md_code_text
    return env


def render(
    bundle_root: Path,
    *,
    fmt: str = "md",
    template: Path | None = None,
    now: datetime | None = None,
) -> str:
    """Render the report of the bundle at ``bundle_root`` (``now``: when inverses expire)."""
    from jinja2 import TemplateError

    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    bundle = evidence.Bundle.open(bundle_root)
    if template is not None:
        if not template.is_file():
            raise UsageError(f"--template {template}: no such file")
        # escaped unless the template says it makes Markdown or text: a page named mine.j2
        # must not carry attacker text raw
        html = fmt == "html" or not any(k in template.name for k in (".md", ".txt"))
        env, name = _environment(template.parent, html=html), template.name
    else:
        env = _environment(resources.templates_dir(), html=fmt == "html")
        name = f"report.{fmt}.j2"
    try:
        return str(env.get_template(name).render(build_context(bundle, now=now)))
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise UsageError(f"report template {name}{where}: {exc}") from None


def write(
    bundle_root: Path, *, fmt: str = "md", template: Path | None = None, out: Path | None = None
) -> Path:
    """Render and write the report: into the bundle (a derived file) or to ``out``."""
    text = render(bundle_root, fmt=fmt, template=template).encode()
    if out is None:
        target = bundle_root / f"report.{fmt}"
        evidence.replace_derived(target, text)
        return target
    try:
        out.write_bytes(text)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return out
