"""The table of latest figures in ``benchmarks/README.md``, kept by the benchmarks themselves.

Each benchmark, run with ``--record``, replaces its own row (found by its name in the first
column) with what it just measured, the machine it ran on, the date and the command that
reproduces it. The rest of the README is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import sys
from datetime import date
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
HEADER = (
    "| Benchmark | kmsir | Peer | Ratio | Goal | Machine | Date | Command |\n"
    "|---|---|---|---|---|---|---|---|\n"
)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine() -> str:
    """CPU model, cores and Python of this machine, in a few words."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = re.sub(r"\s+", " ", re.sub(r"\((R|TM)\)|CPU|Processor", "", model)).strip()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def command() -> str:
    """The command that ran this benchmark, as a user would type it from the checkout."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(README.parent.parent)
    args = [a for a in sys.argv[1:] if a != "--record"]
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, args)])


def record(name: str, *, kmsir: str, peer: str, ratio: str, goal: str) -> None:
    """Replace (or add) the row of benchmark ``name`` in the README's results table."""
    cells = [name, kmsir, peer, ratio, goal, machine(), date.today().isoformat(), f"`{command()}`"]
    row = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"
    text = README.read_text() if README.exists() else ""
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{HEADER}{END}\n"
    head, rest = text.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    rows = [r + "\n" for r in table.strip("\n").splitlines()[2:] if r.strip()]
    rows = [r for r in rows if r.split("|")[1].strip() != name]
    rows.append(row)
    rows.sort(key=lambda r: r.split("|")[1].strip())
    README.write_text(f"{head}{BEGIN}\n{HEADER}{''.join(rows)}{END}{tail}")
    print(f"recorded in {README}: {name}")
