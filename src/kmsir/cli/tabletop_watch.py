"""``kmsir tabletop facilitator`` and ``kmsir tabletop room``: following an exercise live.

The facilitator's screen is a line prompt (prompt_toolkit, with ``patch_stdout``) under which
the players' journal is polled about twice a second: what happens in the exercise is printed
above the prompt as it comes. The facilitator types commands (``help``); their actions are
journaled in their own bundle and sent to the players' process (``tabletop.facilitation``).
Everything shown comes from ``exercise.facilitator_view`` and is made inert first (journal
text is untrusted; the lines are drawn in ``tabletop_screen``). A closed terminal or a kill
ends the facilitation as ``quit`` does: the facilitator's bundle is always finished.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kmsir.cli.common import EvidenceDir, app, err, handled
from kmsir.cli.tabletop import tabletop_app
from kmsir.cli.tabletop_screen import Screen, status_lines
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
  end          end the exercise (the players' run stops at its next step; after the run,
               the players' process stops serving the world)
  quit         stop following (your bundle is finished); Ctrl-D does the same
  help         this list"""


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
    with _Ending() as ending:
        # beside the players' run (``exercise.facilitators`` and the room look there),
        # whatever this directory or --evidence-dir
        followed = facilitation.start(players.bundle.resolve().parent.parent, players)
        try:
            print(visible(f"kmsir tabletop facilitator: following {players.bundle}"))
            print(visible(f"your bundle: {followed.bundle}"))
            if not followed.can_send:
                print("this run has no tabletop session: notes only (nothing reaches the players)")
            print("type help for the commands")
            screen = Screen(lambda: _facilitator_view(players.bundle), _printer())
            _refresh(screen)  # where things stand, then what happened so far
            _follow(screen, followed, ending)
        except OSError:
            if ending.signal is None:
                raise  # else: its terminal is gone; the bundle is finished all the same
        finally:
            bundle = followed.close(ending.why)
            with contextlib.suppress(OSError):
                print(visible(f"facilitation finished; your bundle: {bundle}"))
    if ending.signal is not None:
        raise typer.Exit(128 + ending.signal)


class _Ending:
    """SIGHUP (the facilitator's terminal closed) and SIGTERM (a kill) end the facilitation
    as ``quit`` does, so that the facilitator's bundle is finished: the prompt waiting for a
    command ends at once; a command being carried out is done first (never cut mid-write)."""

    SIGNALS = (signal.SIGHUP, signal.SIGTERM)

    def __init__(self) -> None:
        #: The signal that ended the facilitation, once one came.
        self.signal: int | None = None
        self._wake: Callable[[], None] | None = None
        self._before: dict[int, Any] = {}

    def __enter__(self) -> _Ending:
        for number in self.SIGNALS:
            self._before[number] = signal.signal(number, self._caught)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._before.items():
            signal.signal(number, handler)

    @property
    def why(self) -> str | None:
        """What ended it, for the facilitator's journal (None: the facilitator did)."""
        if self.signal is None:
            return None
        closed = " (its terminal closed)" if self.signal == signal.SIGHUP else ""
        return f"stopped by {signal.Signals(self.signal).name}{closed}"

    def _caught(self, number: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = number
            if self._wake is not None:
                self._wake()

    def ask(self, ask: Callable[[], str], wake: Callable[[], None]) -> str:
        """``ask()``; ended with ``EOFError`` (as Ctrl-D) when a signal came or comes while
        it waits (``wake`` ends a waiting prompt: run from the signal handler)."""
        self._wake = wake
        try:
            if self.signal is not None:
                raise EOFError
            return ask()
        finally:
            self._wake = None


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


def _refresh(screen: Screen) -> None:
    try:
        screen.refresh()
    except KmsirError as exc:
        screen.show(one_line(f"cannot read the exercise: {exc}"))


def _follow(screen: Screen, followed: Any, ending: _Ending) -> None:
    """Poll the players' journal in the background; read commands until ``quit``."""
    from kmsir.tabletop import facilitation

    follower = facilitation.Follower(followed.players)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            _poll_once(screen, follower, followed)
            stop.wait(POLL)

    def interrupt() -> None:
        raise EOFError

    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        session: Any = PromptSession()

        def ask() -> str:
            return str(session.prompt("facilitator> "))

        def wake() -> None:
            app = session.app
            if not (app.is_running and app.loop is not None):
                raise EOFError
            app.loop.call_soon_threadsafe(functools.partial(app.exit, exception=EOFError))

        with patch_stdout(raw=True):
            _loop(lambda: ending.ask(ask, wake), ending, screen, followed, stop, poll)
    else:
        _loop(lambda: ending.ask(input, interrupt), ending, screen, followed, stop, poll)


def _poll_once(screen: Screen, follower: Any, followed: Any) -> None:
    """One look at the exercise: the screen refreshed when the players' journal grew, the
    players' process's answers to this facilitator's commands shown. Whatever goes wrong is
    one line on the screen: the following goes on (the poll thread never dies)."""
    try:
        if follower.changed():
            _refresh(screen)
        for answer in followed.answers():
            said = "done" if answer.get("ok") else "not done"
            what = f"({said}): {answer.get('what')}"
            screen.show(one_line(f"players' process, command {answer.get('seq')} {what}"))
    except Exception as exc:  # any: one line, and the following goes on
        screen.show(one_line(f"cannot follow the exercise now: {exc}"))


def _loop(
    ask: Callable[[], str],
    ending: _Ending,
    screen: Screen,
    followed: Any,
    stop: threading.Event,
    poll: Any,
) -> None:
    poller = threading.Thread(target=poll, name="kmsir-follow", daemon=True)
    poller.start()
    try:
        while ending.signal is None:
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
        elif word == f.FIRE and _number(rest) is None:
            show("fire which inject? (fire N; status lists them)")
        elif word in f.SENT:
            inject = _number(rest) if word == f.FIRE else None
            if followed.can_send:  # without a session, act says why nothing is sent
                screen.refresh()
                why = followed.refusal(word, screen.view, inject)
                if why is not None:
                    show(one_line(f"cannot: {why}"))
                    return True
            seq = followed.act(word, inject=inject)
            done = {
                f.FIRE: f"inject {inject} fires at the players' next step",
                f.HOLD: "timed injects are held until you release them",
                f.RELEASE: "held injects are released",
                f.END: "the exercise ends at the players' next step",
            }[word]
            if word == f.END and followed.can_send and followed.finished() is not None:
                done = "the players' process stops serving the world"  # the run is over
            show(f"sent (command {seq}): {done}")
        else:
            show(one_line(f"unknown command {word!r}; type help"))
    except KmsirError as exc:  # refused, or the exercise does not read: the prompt goes on
        show(one_line(f"cannot: {exc}"))
    return True


def _number(text: str) -> int | None:
    """The inject number ``text`` gives, else None: ASCII digits only ("²" is a digit to
    ``isdigit``, yet no number to ``int``)."""
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)


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
    facilitation.check(players)  # what cannot be shown is refused now, not answered 500
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
