"""The players' side of the command channel: the facilitator's commands still to apply, and
the acknowledgements owed for those applied.

A command is acknowledged only once what it did is in the players' journal: the players'
process collects the acknowledgements of a step boundary (``later``) and writes them when the
engine says the boundary's inject records are journaled (``acknowledge``, its
``after_boundary``), so a crash in between never leaves an acknowledged inject missing from
the journal. A file in the commands directory that is no command is skipped for good: it is
acknowledged as refused, once, by its file name's number, and the players are warned in a
line. A channel that cannot be read or written is warned about; the run goes on.

A resumed run re-opens the inbox (``reopen``): the commands acknowledged are done, a fire the
journal holds but whose acknowledgement the crash lost is acknowledged then, and the timers
are held again as the acknowledgements say (``channel.holding``: the last hold or release
that took effect, a world reset since starting unheld).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kmsir.errors import KmsirError
from kmsir.evidence.view import RunView
from kmsir.tabletop import channel


def where(step_id: str | None) -> str:
    """Where a command took effect, as its acknowledgement says."""
    return f"before step {step_id}" if step_id else "at the end of the run"


class Inbox:
    """The commands of one players' session, applied in order (see the module's docstring)."""

    def __init__(self, session: channel.Session, warn: Callable[[str], None]) -> None:
        self.session = session
        self.warn = warn
        self.seen = 0  # the last command applied
        self._pending: list[dict[str, Any]] = []

    def commands(self) -> list[dict[str, Any]]:
        """The commands not applied yet; a bad file is refused (``later``) and warned about;
        a channel that cannot be read: none this time."""
        try:
            found = channel.commands(self.session, after=self.seen)
        except (OSError, KmsirError) as exc:
            self.warn(f"kmsir tabletop: the command channel cannot be read: {exc}")
            return []
        good = []
        for command in found:
            if "invalid" in command:
                self.seen = int(command["seq"])
                self.later(command, ok=False, what=f"skipped: {command['invalid']}")
                self.warn(f"kmsir tabletop: command {command['seq']} skipped: {command['invalid']}")
            else:
                good.append(command)
        return good

    def later(self, command: Mapping[str, Any], *, ok: bool, what: str, **more: Any) -> None:
        """Command ``command`` was applied (``ok``: it took effect): acknowledged at
        ``acknowledge``; it counts as seen now."""
        seq = int(command["seq"])
        self.seen = max(self.seen, seq)
        action = str(command.get("action") or "?")
        self._pending.append({"seq": seq, "action": action, "ok": ok, "what": what, **more})

    def elsewhere(self, command: Mapping[str, Any], run_id: str | None, which: str) -> bool:
        """Whether ``command`` is meant for another run than ``run_id`` (``which``: that run,
        as the players' process sees it); then it is refused (``later``), never applied. A
        command naming no run (an older file) is meant for any."""
        meant = command.get("run")
        if meant is None or meant == run_id:
            return False
        self.later(
            command, ok=False, what=f"meant for run {meant}, not {which} ({run_id}): not applied"
        )
        return True

    def acknowledge(self) -> None:
        """Write the acknowledgements owed (the engine's ``after_boundary``)."""
        pending, self._pending = self._pending, []
        for item in pending:
            seq, action = item.pop("seq"), item.pop("action")
            try:
                channel.ack(self.session, seq, action, **item)
            except (OSError, KmsirError) as exc:
                self.warn(f"kmsir tabletop: command {seq} not acknowledged: {exc}")

    def reopen(self, view: RunView) -> bool:
        """Take up the channel where the resumed run ``view`` left it; whether the timers were
        held then."""
        fired = {
            m.record.get("command"): m.record
            for m in view.injects
            if isinstance(m.record, Mapping) and m.record.get("trigger") == "facilitator"
        }
        answers = []
        acked = {a.get("seq"): a for a in channel.acks(self.session)}
        for command in channel.commands(self.session):
            seq = command["seq"]
            answer = acked.get(seq)
            if answer is None and seq in fired:  # journaled, the acknowledgement lost
                index = fired[seq].get("inject")
                what = f"inject {index} fired {where(fired[seq].get('before'))}"
                channel.ack(self.session, seq, "fire", ok=True, what=what, inject=index)
            elif answer is None:
                break  # applied at the next step boundary
            else:
                answers.append(answer)
            self.seen = seq
        return channel.holding(answers)
