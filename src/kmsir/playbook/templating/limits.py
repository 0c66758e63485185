"""What templates may do: the size limits, the two profiles and their static checks.

Each kind of template has a ``Profile`` (``PLAYBOOK``, ``REPORT``): how long a value or the
output may be, how much one render may build in all, and which statements it may use. The
statements are checked on the parsed template, before anything runs (``_static_problem``).
The time budgets are not here: ``kmsir.playbook.templating`` reads them at render time.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import nodes

#: Longest string, list or mapping a playbook template may produce or pass around.
MAX_LENGTH = 1_000_000
#: Largest integer (in bits) arithmetic may produce: plenty for counts, sizes and epochs.
MAX_INT_BITS = 128
#: Largest integer argument a call or filter may receive (widths, counts, repeats), and the
#: largest width or precision in a format string.
MAX_INT_ARG = 100_000
#: Most characters and items one playbook template may build in all (values computed, text
#: captured by set blocks): bounds memory however many values are alive at once.
MAX_BUILT = 8 * MAX_LENGTH
#: Report templates: longest value, longest output (a report can be a few MB), most built
#: in all, and longest source.
REPORT_MAX_LENGTH = 4 * 1024 * 1024
REPORT_MAX_OUTPUT = 32 * 1024 * 1024
REPORT_MAX_BUILT = 64 * 1024 * 1024
REPORT_MAX_SOURCE = 1024 * 1024

#: Statements neither kind of template may use: they reach outside the template (other
#: files) or render a block into a string no output bound sees (``self.name()``).
_OUTSIDE = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Block)


@dataclass(frozen=True)
class Profile:
    """The limits and rules of one kind of template."""

    #: How messages name these templates ("playbook templates").
    name: str
    #: Longest value (characters plus items) an operation may produce or receive.
    max_length: int
    #: Longest rendered output.
    max_output: int
    #: Most one render may build in all (see ``MAX_BUILT``).
    max_built: int
    #: Statements refused by the static check.
    forbidden: tuple[type[nodes.Node], ...]
    #: Whether a loop may contain another (each iteration is time-bounded either way).
    nested_loops: bool
    #: Report templates: a missing field renders empty, blocks are trimmed, layout filters
    #: and a few globals (``range``, ``namespace``...) exist, and every value output is
    #: shown through ``inert.visible``.
    report: bool


PLAYBOOK = Profile(
    name="playbook",
    max_length=MAX_LENGTH,
    max_output=MAX_LENGTH,
    max_built=MAX_BUILT,
    forbidden=(nodes.Macro, nodes.CallBlock, nodes.FilterBlock, *_OUTSIDE),
    nested_loops=False,
    report=False,
)
REPORT = Profile(
    name="report",
    max_length=REPORT_MAX_LENGTH,
    max_output=REPORT_MAX_OUTPUT,
    max_built=REPORT_MAX_BUILT,
    # a call or filter block writes its callee's result straight to the output, past the
    # finalize hook that makes values inert
    forbidden=(nodes.CallBlock, nodes.FilterBlock, *_OUTSIDE),
    nested_loops=True,
    report=True,
)

# -- static checks ----------------------------------------------------------------------


def _forbidden_statement(tree: nodes.Node, profile: Profile) -> str | None:
    """The first statement a template may not use, described, or ``None``."""
    where = f"{profile.name} templates"
    for node in tree.find_all(profile.forbidden):
        return f"'{type(node).__name__.lower()}' blocks are not allowed in {where}"
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            return f"recursive loops are not allowed in {where}"
        if not profile.nested_loops and any(True for _ in loop.find_all(nodes.For)):
            return f"nested loops are not allowed in {where}"
    return None


def _private_access(tree: nodes.Node) -> str | None:
    """The first ``_name`` attribute or item a template reaches for (Python internals)."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            return name
    return None


def _static_problem(tree: nodes.Node, profile: Profile = PLAYBOOK) -> str | None:
    private = _private_access(tree)
    if private is not None:
        return f"refers to {private!r}: Python internals are not reachable from templates"
    return _forbidden_statement(tree, profile)
