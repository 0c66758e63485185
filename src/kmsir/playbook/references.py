"""What a playbook's templates read of earlier steps, from the parsed template (never rendered).

``validate`` checks each ``steps.X.field`` against the outputs X's action declares, and lint
warns about a read of a step that may not have run unless a condition around it makes sure it
did (``'X' in steps``), and about an answer compared with a value that is not one of the
question's choices. The three spellings of a read are the same read: ``steps.X.field``,
``steps['X'].field`` and ``steps.X['field']``.

A condition (``'X' in steps``, or ``steps.X is defined``) guards what runs only when it holds:
the right of ``and``, the ``if`` branch of ``a if c else b`` and of ``{% if %}`` (and the
other side for ``not in``, ``or`` and ``else``), and a step's ``with:`` behind its own
``when:``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes

from kmsir.playbook import templating

#: Deepest template (in nested nodes: ``a and b and c`` is three deep) that is read here; the
#: walks below recurse once per level, a deeper one is left unread (whatever its syntax).
MAX_DEPTH = 100

#: Steps known to have run at a point of a template.
Present = frozenset[str]
#: More steps known to have run once these have (a step ran only if its ``when:`` held).
Implied = Callable[[Present], Present]


@dataclass(frozen=True)
class Reference:
    """A read of step ``step``'s output ``field`` (``None``: the step's whole outputs)."""

    step: str
    field: str | None
    #: A condition around the read makes sure ``step`` ran.
    guarded: bool


@dataclass(frozen=True)
class Comparison:
    """``steps.<step>.<field>`` compared (``op``: eq, ne, in, notin) with literal ``values``."""

    step: str
    field: str
    op: str
    values: tuple[Any, ...]
    #: In a ``when:``, a condition the expression cannot be true without.
    required: bool


def _nothing_more(present: Present) -> Present:
    return present


@functools.lru_cache(maxsize=1024)
def parse(text: str, *, expression: bool) -> nodes.Node | None:
    """The parsed ``when:`` expression or ``with:`` template; ``None`` if it does not parse
    (``validate`` reports why, elsewhere) or is deeper than ``MAX_DEPTH``."""
    source = f"{{{{ {text} }}}}" if expression else text
    try:
        tree = templating.environment().parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    if _deeper_than(tree, MAX_DEPTH):
        return None
    if not expression:
        return tree
    body = tree.body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1:
        return body[0].nodes[0]
    return None


@functools.lru_cache(maxsize=1024)
def reads_variable(text: str, name: str, *, expression: bool) -> bool:
    """Whether the template (or ``when:`` expression) reads the context variable ``name``
    (``item``: a ``for_each`` step's item), not counting a variable of its own by that name;
    ``False`` for one that does not parse (``validate`` reports why, elsewhere)."""
    source = f"{{{{ {text} }}}}" if expression else text
    try:
        return name in meta.find_undeclared_variables(templating.environment().parse(source))
    except (TemplateSyntaxError, RecursionError):
        return False


def _deeper_than(tree: nodes.Node, limit: int) -> bool:
    """Whether ``tree`` nests deeper than ``limit`` (walked without recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        stack += [(child, depth + 1) for child in node.iter_child_nodes()]
    return False


def _step_access(node: nodes.Node) -> str | None:
    """``X`` when ``node`` is ``steps.X`` or ``steps['X']``."""
    if isinstance(node, nodes.Getattr) and _is_steps(node.node):
        return str(node.attr)
    if (
        isinstance(node, nodes.Getitem)
        and _is_steps(node.node)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _is_steps(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "steps"


def field_access(node: nodes.Node) -> tuple[str, str] | None:
    """``(X, field)`` when ``node`` is ``steps.X.field`` (in any of its spellings)."""
    if isinstance(node, nodes.Getattr):
        step = _step_access(node.node)
        return None if step is None else (step, str(node.attr))
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        step = _step_access(node.node)
        return None if step is None else (step, node.arg.value)
    return None


def present_if(node: nodes.Node, holds: bool) -> Present:
    """The steps that must have run for ``node`` to be true (``holds``) or false."""
    if isinstance(node, nodes.Not):
        return present_if(node.node, not holds)
    if isinstance(node, nodes.And):
        left, right = present_if(node.left, holds), present_if(node.right, holds)
        return left | right if holds else left & right
    if isinstance(node, nodes.Or):
        left, right = present_if(node.left, holds), present_if(node.right, holds)
        return left & right if holds else left | right
    if (
        isinstance(node, nodes.Compare)
        and len(node.ops) == 1
        and isinstance(node.expr, nodes.Const)
        and isinstance(node.expr.value, str)
        and _is_steps(node.ops[0].expr)
    ):
        op = node.ops[0].op
        if (op == "in" and holds) or (op == "notin" and not holds):
            return frozenset({node.expr.value})
    tested = _defined_test(node)
    if tested is not None and (tested[1] == "defined") == holds:
        return frozenset({tested[0]})
    return frozenset()


def _defined_test(node: nodes.Node) -> tuple[str, str] | None:
    """``(X, "defined")`` for ``steps.X is defined`` (or ``undefined``): a guard, not a read."""
    if isinstance(node, nodes.Test) and node.name in ("defined", "undefined"):
        step = _step_access(node.node)
        return None if step is None else (step, str(node.name))
    return None


def references(
    node: nodes.Node, present: Present = frozenset(), implied: Implied = _nothing_more
) -> Iterator[Reference]:
    """Every read of a step in ``node``, each with whether a condition around it makes sure
    the step ran (``present``: steps known to have run already)."""
    yield from _Walk(implied).visit(node, implied(present))


class _Walk:
    def __init__(self, implied: Implied) -> None:
        self.implied = implied

    def more(self, present: Present, node: nodes.Node, holds: bool) -> Present:
        found = present_if(node, holds)
        return self.implied(present | found) if found - present else present

    def visit(self, node: nodes.Node, present: Present) -> Iterator[Reference]:
        if _defined_test(node) is not None:
            return
        read = field_access(node)
        if read is not None:
            yield Reference(read[0], read[1], read[0] in present)
            return
        step = _step_access(node)
        if step is not None:
            yield Reference(step, None, step in present)
            return
        if isinstance(node, nodes.And | nodes.Or):
            yield from self.visit(node.left, present)
            right = self.more(present, node.left, isinstance(node, nodes.And))
            yield from self.visit(node.right, right)
        elif isinstance(node, nodes.CondExpr):
            yield from self.visit(node.test, present)
            yield from self.visit(node.expr1, self.more(present, node.test, True))
            if node.expr2 is not None:
                yield from self.visit(node.expr2, self.more(present, node.test, False))
        elif isinstance(node, nodes.If):
            yield from self._branches(node, present)
        else:
            for child in node.iter_child_nodes():
                yield from self.visit(child, present)

    def _branches(self, node: nodes.If, present: Present) -> Iterator[Reference]:
        """``{% if %}{% elif %}{% else %}``: each branch knows its test held and the ones
        before it did not."""
        otherwise = present
        for branch in (node, *node.elif_):
            yield from self.visit(branch.test, otherwise)
            inside = self.more(otherwise, branch.test, True)
            for child in branch.body:
                yield from self.visit(child, inside)
            otherwise = self.more(otherwise, branch.test, False)
        for child in node.else_:
            yield from self.visit(child, otherwise)


def conjuncts(node: nodes.Node) -> Iterator[nodes.Node]:
    """The parts of ``a and b and c``: each must be true for the whole to be."""
    if isinstance(node, nodes.And):
        yield from conjuncts(node.left)
        yield from conjuncts(node.right)
    else:
        yield node


def comparisons(node: nodes.Node, *, when: bool = False) -> Iterator[Comparison]:
    """Every ``steps.X.field`` compared with literals in ``node`` (``when``: ``node`` is a
    ``when:`` expression, whose top-level ``and`` parts are required)."""
    required = {id(part) for part in conjuncts(node)} if when else set()
    for found in node.find_all(nodes.Compare):
        if len(found.ops) != 1:
            continue
        operand = found.ops[0]
        sides = [(found.expr, operand.expr), (operand.expr, found.expr)]
        if operand.op in ("in", "notin"):
            sides = sides[:1]  # ``'x' in steps.a.b`` is not a comparison of steps.a.b
        for read_side, other in sides:
            read = field_access(read_side)
            values = _literals(other)
            if read is not None and values is not None:
                yield Comparison(read[0], read[1], operand.op, values, id(found) in required)
                break


def _literals(node: nodes.Node) -> tuple[Any, ...] | None:
    if isinstance(node, nodes.Const):
        return (node.value,)
    if isinstance(node, nodes.List | nodes.Tuple) and all(
        isinstance(item, nodes.Const) for item in node.items
    ):
        return tuple(item.value for item in node.items if isinstance(item, nodes.Const))
    return None


def never_true(node: nodes.Node) -> bool:
    """``node`` is a literal that is always false (``when: false``)."""
    return isinstance(node, nodes.Const) and not node.value
