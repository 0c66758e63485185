"""``kmsir tabletop facilitator`` and ``kmsir tabletop room``: following an exercise live.

The facilitator's screen is a line prompt (prompt_toolkit, with ``patch_stdout``) under which
the players' journal is polled about twice a second: what happens in the exercise is printed
above the prompt as it comes. The facilitator types commands (``help``); their actions are
journaled in their own bundle and sent to the players' process (``tabletop.facilitation``).
Everything shown comes from ``exercise.facilitator_view`` and is made inert first (journal
text is untrusted).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kmsir.cli.common import EvidenceDir, app, err, handled
from kmsir.cli.tabletop import tabletop_app
from kmsir.errors import KmsirError, UsageError
from kmsir.inert import one_line, visible

Json = dict[str, Any]
#: Seconds between two reads of the players' journal.
POLL = 0.5
HELP = """commands:
  fire N       fire inject N now (it reaches the players at their next step)
  hold         hold the timed injects (none fires when due) until released
  release      release the held injects
  note TEXT    add an observation to your bundle
  status       where the team is, decisions against the expected ones, what comes next
  end          end the exercise (the players' run stops at its next step)
  quit         stop following (your bundle is finished); Ctrl-D does the same
  help         this list"""


def _hms(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _clock(at: Any) -> str:
    text = str(at or "")
    return text[11:19] if len(text) >= 19 and text[10] == "T" else text


def _expected(decision: Json) -> str:
    wanted = [str(decision.get("expected") or "")] + [
        str(a) for a in decision.get("alternatives") or []
    ]
    return " / ".join(w for w in wanted if w) or "(not scored)"


def event_line(item: Json) -> str:
    """One timeline item as one inert line."""
    step = f" {item['step']}" if item.get("step") else ""
    return one_line(
        f"{_clock(item.get('at'))} {item.get('kind', '')}{step}: {item.get('text', '')}"
    )


def decision_line(decision: Json) -> str:
    """A team's decision against the expected one, with its time, as one inert line."""
    made = (
        f"{decision['answer']} (by {decision.get('by')}, {_hms(decision.get('seconds'))})"
        if decision.get("answer") is not None
        else "-"
    )
    late = " LATE" if decision.get("late") else ""
    return one_line(
        f"  decision {decision.get('step')}: {made}; expected {_expected(decision)}"
        f" -> {str(decision.get('verdict', '')).upper()}{late}"
    )


def _score(view: Json) -> str:
    score = view.get("score")
    if isinstance(score, dict):
        return f"{score.get('total')}/{score.get('out_of', 100)}"
    return str(score) if score is not None else "-"


def status_lines(view: Json) -> list[str]:
    """The whole facilitator view, for ``status``."""
    scenario = view.get("scenario") or {}
    lines = [
        f"{scenario.get('title') or scenario.get('id')} · team {view.get('team') or '-'} · run "
        f"{view.get('run_id')} · {view.get('status')} · clock {_hms(view.get('clock_seconds'))}",
        f"now at: {view.get('current_step') or '-'}",
        "ground truth:",
    ]
    truth = view.get("ground_truth") or {}
    for name in ("summary", "key", "principal", "grant", "access_key"):
        if truth.get(name):
            lines.append(f"  {name}: {truth[name]}")
    lines += [f"  {m.get('at')}: {m.get('what')}" for m in truth.get("timeline") or []]
    decisions = view.get("decisions") or []
    scored = [d for d in decisions if d.get("expected") is not None]
    lines.append("decisions:")
    lines += [decision_line(d) for d in scored] or ["  none expected"]
    if len(decisions) > len(scored):
        lines.append(f"  and {len(decisions) - len(scored)} not scored (step approvals)")
    lines.append("next injects:")
    for inject in view.get("next_injects") or []:
        when = (
            f"after {inject['after']}"
            if inject.get("after")
            else f"at {inject.get('after_minutes')} min"
        )
        due = inject.get("due_in_seconds")
        lines.append(
            f"  #{inject.get('index')} {inject.get('title') or inject.get('say')} ({when}"
            + (f", due in {_hms(due)}" if isinstance(due, (int, float)) else "")
            + (", HELD" if inject.get("held") else "")
            + ")"
        )
    if not view.get("next_injects"):
        lines.append("  none left")
    unseen = [e.get("what") for e in view.get("evidence") or [] if not e.get("seen")]
    lines.append("evidence not yet seen:")
    lines += [f"  {what}" for what in unseen] or ["  none"]
    timing = view.get("timing") or {}
    lines.append(
        f"times: identify {_hms(timing.get('identify_seconds'))}, contain "
        f"{_hms(timing.get('contain_seconds'))}, recover {_hms(timing.get('recover_seconds'))}"
        f" · score so far {_score(view)}"
    )
    lines += [f"warning: {w}" for w in view.get("warnings") or []]
    for seen in view.get("observations") or []:
        when, who = _clock(seen.get("at")), seen.get("by")
        lines.append(f"observation {when} {who}: {seen.get('text')}")
    # one inert line each (journal and scenario text is untrusted), indentation kept
    return [line[: len(line) - len(line.lstrip())] + one_line(line.lstrip()) for line in lines]


class Screen:
    """What the facilitator has been shown: prints what is new in the exercise."""

    def __init__(self, load: Callable[[], Json], show: Callable[[str], None]) -> None:
        self._load = load
        self.show = show
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._decided: set[str] = set()
        self._status: str | None = None
        self.view: Json = {}

    def refresh(self) -> None:
        """Read the exercise again and print what happened since the last time."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        self.view = view = self._load()
        # a scored decision is shown with the expected one right after its timeline line
        judged = {
            (d.get("step"), d.get("at")): d
            for d in view.get("decisions") or []
            if d.get("answer") is not None and d.get("expected") is not None
        }
        for item in view.get("timeline") or []:
            key = repr(sorted(item.items()))
            if key in self._seen:
                continue
            self._seen.add(key)
            self.show(event_line(item))
            decision = judged.get((item.get("step"), item.get("at")))
            if decision is not None:
                self._decision(decision)
        for decision in judged.values():
            self._decision(decision)
        status = str(view.get("status"))
        if status != self._status:
            if self._status is not None:
                self.show(one_line(f"the players' run is now {status}"))
            self._status = status

    def _decision(self, decision: Json) -> None:
        key = f"{decision.get('step')}@{decision.get('at')}"
        if key not in self._decided:
            self._decided.add(key)
            self.show(decision_line(decision))


@tabletop_app.command("facilitator")
@handled
def facilitator(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The players' run id or bundle.")],
    evidence_dir: EvidenceDir = Path("evidence"),
) -> None:
    """Follow a team's exercise live: where it is, its decisions against the expected ones,
    the ground truth, the next injects; fire, hold and release injects, add observations,
    end the exercise. Your actions go into your own bundle, linked to the players' run."""
    from kmsir.tabletop import facilitation

    players = facilitation.locate(evidence_dir, run)
    followed = facilitation.start(evidence_dir, players)
    print(visible(f"kmsir tabletop facilitator: following {players.bundle}"))
    print(visible(f"your bundle: {followed.bundle}"))
    if not followed.can_send:
        print("this run has no tabletop session: notes only (nothing reaches the players)")
    print("type help for the commands")
    screen = Screen(lambda: _facilitator_view(players.bundle), _printer())
    try:
        _follow(screen, followed)
    finally:
        bundle = followed.close()
        print(visible(f"facilitation finished; your bundle: {bundle}"))


def _facilitator_view(bundle: Path) -> Json:
    from kmsir.tabletop import exercise

    view: Json = exercise.facilitator_view(exercise.load(bundle))
    return view


def _printer() -> Callable[[str], None]:
    lock = threading.Lock()

    def show(line: str) -> None:
        with lock:
            print(visible(line), flush=True)

    return show


def _follow(screen: Screen, followed: Any) -> None:
    """Poll the players' journal in the background; read commands until ``quit``."""
    from kmsir.tabletop import facilitation

    follower = facilitation.Follower(followed.players)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                if follower.changed():
                    screen.refresh()
                for answer in followed.answers():
                    said = "done" if answer.get("ok") else "not done"
                    screen.show(
                        one_line(
                            f"players' process, command {answer.get('seq')} ({said}): "
                            f"{answer.get('what')}"
                        )
                    )
            except KmsirError as exc:
                screen.show(one_line(f"cannot read the exercise: {exc}"))
            stop.wait(POLL)

    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        session: Any = PromptSession()

        def ask() -> str:
            return str(session.prompt("facilitator> "))

        with patch_stdout(raw=True):
            _loop(ask, screen, followed, stop, poll)
    else:
        _loop(lambda: input(), screen, followed, stop, poll)


def _loop(
    ask: Callable[[], str], screen: Screen, followed: Any, stop: threading.Event, poll: Any
) -> None:
    poller = threading.Thread(target=poll, name="kmsir-follow", daemon=True)
    poller.start()
    try:
        while True:
            try:
                line = ask()
            except (EOFError, KeyboardInterrupt):
                return
            if not _command(line.strip(), screen, followed):
                return
    finally:
        stop.set()
        poller.join(timeout=5)


def _command(line: str, screen: Screen, followed: Any) -> bool:
    """Carry out one typed command; False when it was ``quit``."""
    from kmsir.tabletop import facilitation as f

    word, _, rest = line.partition(" ")
    rest = rest.strip()
    show = screen.show
    try:
        if not word:
            return True
        if word == f.QUIT:
            return False
        if word == "help":
            show(HELP)
        elif word == "status":
            screen.refresh()
            for text in status_lines(screen.view):
                show(text)
        elif word == f.NOTE:
            if not rest:
                show("note what? (note TEXT)")
            else:
                followed.act(f.NOTE, text=rest)
                show("noted.")
        elif word == f.FIRE:
            if not rest.isdigit():
                show("fire which inject? (fire N; status lists them)")
            else:
                seq = followed.act(f.FIRE, inject=int(rest))
                show(f"sent (command {seq}): inject {int(rest)} fires at the players' next step")
        elif word in (f.HOLD, f.RELEASE, f.END):
            seq = followed.act(word)
            done = {
                f.HOLD: "timed injects are held until you release them",
                f.RELEASE: "held injects are released",
                f.END: "the exercise ends at the players' next step",
            }[word]
            show(f"sent (command {seq}): {done}")
        else:
            show(one_line(f"unknown command {word!r}; type help"))
    except UsageError as exc:
        show(one_line(f"cannot: {exc}"))
    return True


@tabletop_app.command("room")
@handled
def room(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The players' run id or bundle.")],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")] = 0,
    facilitator: Annotated[
        bool,
        typer.Option(
            "--facilitator",
            help="The facilitator's screen: with the ground truth, the decisions against the "
            "expected ones and the next injects (never on the room's screen).",
        ),
    ] = False,
    evidence_dir: EvidenceDir = Path("evidence"),
) -> None:
    """Serve the room's screen on 127.0.0.1 until Ctrl-C: the exercise clock, the timeline of
    steps, decisions and injects, the key states, the findings seen; it follows the journal
    by itself. The players' version never shows the hidden parts."""
    from kmsir.tabletop import facilitation
    from kmsir.tabletop import room as rooms

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    players = facilitation.locate(evidence_dir, run)
    try:
        server = rooms.serve(players.bundle, port=port, facilitator=facilitator)
    except OSError as exc:
        raise UsageError(f"--port {port}: cannot listen on 127.0.0.1: {exc.strerror}") from None
    try:
        whose = "the facilitator's screen" if facilitator else "the room's screen"
        print(visible(f"kmsir tabletop room: {whose} for {players.bundle}"))
        print(server.url, flush=True)
        err("open it in a browser; Ctrl-C stops it")
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        err("kmsir tabletop room: stopped")
    finally:
        server.server_close()


__all__ = ["app", "facilitator", "room"]
