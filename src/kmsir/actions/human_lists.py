"""The human steps that keep a list: a checklist ticked item by item, and an outside file
(a screenshot, a ticket export) attached to the evidence.

Each tick is a ``Decision`` in the journal, so a run that stops mid-checklist asks only the
items not yet ticked when it is resumed. An attached file is read through
``ArtifactSink.outside`` (its path, sha256 and size journaled) and copied into the bundle as
an artifact, so ``verify`` covers it from then on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import ClassVar

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.errors import ActionError, UsageError
from kmsir.evidence.bundle import UnvouchedFile
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import Decision

#: The two answers to a checklist item (the choices an answers file gives per item).
DONE, NOT_DONE = "done", "not done"

#: The most items one checklist holds: a longer list is several steps, or a document.
MAX_ITEMS = 50


class ChecklistParams(Params):
    """The items to tick, in order."""

    items: list[str] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("items")
    @classmethod
    def _items(cls, items: list[str]) -> list[str]:
        for item in items:
            if not item.strip():
                raise ValueError("an item is empty")
            if len(item) > 500:
                raise ValueError(f"item {item[:40]!r}... is longer than 500 characters")
        repeated = sorted({i for i in items if items.count(i) > 1})
        if repeated:
            raise ValueError(f"item {repeated[0][:60]!r} is listed twice")
        return items


def item_question(number: int, item: str) -> str:
    """How the tick of item ``number`` (1-based) is journaled: never "run ..." or "on error",
    which the journal's reading keeps for approvals and failures."""
    return f"checklist item {number}: {item}"


class Checklist(Action[ChecklistParams]):
    """Tick items one by one, each tick journaled; an item not done needs a reason.

    The report shows every item with its tick; later steps read ``steps.<id>.complete`` and
    ``not_done``.

    ```yaml
    - id: hand-off
      action: checklist
      with:
        items:
          - Legal and the data owner informed
          - Ticket opened with the application team
          - Credentials of the CI role rotated
    ```
    An answers file ticks item N of step ``hand-off`` with ``hand-off.N: done`` or
    ``hand-off.N: not done`` and ``hand-off.N.reason: ...``. A resumed run does not ask the
    items ticked before it stopped.
    """

    name = "checklist"
    asks = True
    params = ChecklistParams
    outputs: ClassVar[Mapping[str, str]] = {
        "items": "list[dict]",
        "done": "list[str]",
        "not_done": "list[str]",
        "complete": "bool",
    }

    def api_calls(self, params: ChecklistParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: ChecklistParams) -> Outcome:
        found = ctx.earlier_attempt
        earlier = {
            r.question: r
            for r in (found.recorded if found else ())
            if isinstance(r, Decision) and r.answer in (DONE, NOT_DONE)
        }
        ticks = []
        total = len(params.items)
        for number, item in enumerate(params.items, 1):
            question = item_question(number, item)
            tick = earlier.get(question) or self._tick(ctx, number, total, item, question)
            ticks.append(
                {"item": item, "done": tick.answer == DONE, "by": tick.by, "reason": tick.reason}
            )
        done = [t["item"] for t in ticks if t["done"]]
        not_done = [t for t in ticks if not t["done"]]
        summary = f"{len(done)}/{total} done"
        if not_done:
            shown = "; ".join(f"{t['item']} ({t['reason']})" for t in not_done[:3])
            more = f" and {len(not_done) - 3} more" if len(not_done) > 3 else ""
            summary += f"; not done: {shown}{more}"
        return Outcome(
            outputs={
                "items": ticks,
                "done": done,
                "not_done": [t["item"] for t in not_done],
                "complete": not not_done,
            },
            summary=summary,
        )

    @staticmethod
    def _tick(ctx: ActionContext, number: int, total: int, item: str, question: str) -> Decision:
        """Ask one item (and why, when it is not done); journal the tick."""
        key = f"{ctx.step_id}.{number}"
        answer = ctx.prompter.ask(key, f"[{number}/{total}] {item}", [DONE, NOT_DONE])
        reason = answer.reason
        if answer.value == NOT_DONE:

            def given(text: str) -> str | None:
                return None if text.strip() else "say why it is not done"

            why = ctx.prompter.text(f"{key}.reason", f"Why is {item!r} not done?", given)
            reason = str(why.value).strip()
        tick = Decision(
            question=question, answer=str(answer.value), by=answer.source, reason=reason
        )
        ctx.artifacts.journal(tick)
        return tick


class AttachParams(Params):
    """The file to attach and what it shows."""

    path: str = Field(min_length=1, max_length=4096)
    description: str = Field(min_length=1, max_length=2000)


#: What an artifact name may not hold (the bundle's names are ``[A-Za-z0-9._-]``).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def attachment_name(path: str) -> str:
    """The artifact name of an attached file: ``attached-`` and its file name, reduced to the
    characters a bundle name may hold (never a path, never ``..``)."""
    base = _UNSAFE.sub("-", PurePath(path).name)
    base = re.sub(r"\.{2,}", ".", base).strip("-.")[:100]
    return f"attached-{base or 'file'}"


class Attach(Action[AttachParams]):
    """Add an outside file (a screenshot, a ticket export) to the bundle, hashed and kept.

    Its path, sha256 and size are journaled as it is read, and a copy is kept as an artifact
    that ``verify`` checks from then on; the report lists it with its description.

    ```yaml
    - id: screenshot
      action: evidence.attach
      with:
        path: "{{ inputs.screenshot }}"
        description: Billing alarm for KMS requests, as paged
    ```
    A regular file (never a device, FIFO or folder) of at most 1 MiB
    (``evidence.bundle.MAX_OUTSIDE_BYTES``: crop or compress a larger screenshot), read no
    further than that whatever size it claims; a file inside another kmsir bundle must be an
    artifact its journal recorded, unaltered. Each refusal fails the step (its ``on_error``
    applies), never the whole run: an attached file drives nothing in the run. Outputs:
    ``artifact`` (its path in the bundle), ``sha256``, ``bytes``, ``source`` (the path
    given), ``description``.
    """

    name = "evidence.attach"
    params = AttachParams
    outputs: ClassVar[Mapping[str, str]] = {
        "artifact": "str",
        "sha256": "str",
        "bytes": "int",
        "source": "str",
        "description": "str",
    }

    def api_calls(self, params: AttachParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: AttachParams) -> Outcome:
        try:
            data = ctx.artifacts.outside(params.path)
        except UsageError as exc:  # missing, unreadable, not a regular file, too large
            raise ActionError(f"cannot attach {exc}") from None
        except UnvouchedFile as exc:
            # refused, but as this step's failure (on_error decides), not a stop of the run:
            # the bytes would only be kept, never acted on, and kept is what is refused
            raise ActionError(f"cannot attach {exc}") from None
        if not data:
            raise ActionError(f"cannot attach {params.path}: the file is empty")
        digest = hashlib.sha256(data).hexdigest()
        artifact = ctx.artifacts.write(attachment_name(params.path), data)
        return Outcome(
            outputs={
                "artifact": artifact,
                "sha256": digest,
                "bytes": len(data),
                "source": params.path,
                "description": params.description,
            },
            summary=f"attached {PurePath(params.path).name} ({len(data):,} bytes, sha256 "
            f"{digest[:16]}): {params.description}",
        )
