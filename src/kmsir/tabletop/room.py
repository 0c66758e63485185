"""The room's screen: a read-only web page on 127.0.0.1 that follows a tabletop as it goes.

``/`` is one self-contained page (``templates/tabletop-room.html``: inline CSS and JS under a
strict Content-Security-Policy with a fresh nonce per answer, no asset from anywhere else);
``/state.json`` is the exercise as the players see it (``exercise.players_view``), or with
``facilitator`` as the facilitator does (``exercise.facilitator_view``). The page polls it about
once a second and renders every value with ``textContent``: journal text is untrusted. The
players' room never holds a hidden string: neither the page (the facilitator's sections are
cut from it) nor its state. The server listens on 127.0.0.1 only and answers only requests
addressed to it by that name (a page elsewhere cannot rebind a name of its own onto it).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kmsir import resources
from kmsir.errors import KmsirError, UsageError

Json = dict[str, Any]
#: The only address the room listens on.
HOST = "127.0.0.1"
PAGE = "tabletop-room.html"
#: The facilitator's parts of the page: cut from the players' page.
_FACILITATOR_ONLY = re.compile(r"<!-- facilitator -->.*?<!-- /facilitator -->", re.S)


def policy(nonce: str) -> str:
    """The page's Content-Security-Policy: its own inline script and style (by nonce) and
    requests to itself, nothing else."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def page(nonce: str, *, facilitator: bool) -> str:
    """The room's page, its inline script and style carrying ``nonce``."""
    text = (resources.templates_dir() / PAGE).read_text(encoding="utf-8")
    if not facilitator:
        text = _FACILITATOR_ONLY.sub("", text)
    return text.replace("{{NONCE}}", nonce).replace(
        "{{MODE}}", "facilitator" if facilitator else "players"
    )


def state_of(bundle: Path, *, facilitator: bool, fresh_for: float = 1.0) -> Callable[[], Json]:
    """What ``/state.json`` answers for the players' ``bundle``: the exercise's view, made
    again when a journal grew or after ``fresh_for`` seconds (the clocks move on)."""
    made: dict[str, Any] = {"key": None, "at": 0.0, "view": None}
    lock = threading.Lock()

    def state() -> Json:
        from kmsir.tabletop import exercise

        key = _sizes(bundle)
        with lock:
            now = time.monotonic()
            if made["view"] is None or made["key"] != key or now - made["at"] > fresh_for:
                loaded = exercise.load(bundle)
                made["view"] = (
                    exercise.facilitator_view(loaded)
                    if facilitator
                    else exercise.players_view(loaded)
                )
                made["key"], made["at"] = key, now
            view: Json = made["view"]
            return view

    return state


def _sizes(bundle: Path) -> tuple[int, ...]:
    """The sizes of the players' journal and of every facilitator journal beside it."""
    journals = [bundle / "journal.jsonl"]
    linked = bundle.parent.parent / f"{bundle.parent.name}-facilitator"
    journals += sorted(linked.glob("*/journal.jsonl"))
    sizes = []
    for journal in journals:
        try:
            sizes.append(journal.stat().st_size)
        except OSError:
            sizes.append(-1)
    return tuple(sizes)


class Room(ThreadingHTTPServer):
    """The room's HTTP server (``serve_forever`` in a thread or the foreground)."""

    daemon_threads = True

    def __init__(self, port: int, state: Callable[[], Json], *, facilitator: bool) -> None:
        self.state = state
        self.facilitator = facilitator
        #: Every request answered: (method, path, status), for whoever watches the room.
        self.requests: list[tuple[str, str, int]] = []
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: Room
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._addressed_to_us():
            self._send(421, "text/plain; charset=utf-8", b"misdirected request\n")
        elif path == "/":
            nonce = secrets.token_urlsafe(18)
            body = page(nonce, facilitator=self.server.facilitator).encode()
            self._send(200, "text/html; charset=utf-8", body, csp=policy(nonce))
        elif path == "/state.json":
            try:
                body = json.dumps(self.server.state(), sort_keys=True).encode()
            except Exception as exc:  # the page says so and keeps polling
                said = str(exc) if isinstance(exc, KmsirError) else type(exc).__name__
                body = json.dumps({"error": said[:300]}).encode()
                self._send(500, "application/json", body)
                return
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"")

    def _addressed_to_us(self) -> bool:
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        return host in {f"{HOST}:{port}", f"localhost:{port}"}

    def _send(self, status: int, kind: str, body: bytes, *, csp: str | None = None) -> None:
        self.server.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", csp or "default-src 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``requests`` keeps what was asked."""


def serve(bundle: Path, *, port: int = 0, facilitator: bool = False) -> Room:
    """The room for the players' ``bundle`` on 127.0.0.1:``port`` (0: any free port), bound
    but not yet serving (``serve_forever``). The exercise is read once first: what cannot be
    shown (a facilitator's bundle, a journal that does not read) is refused here, in one
    line (``KmsirError``), rather than answered 500 at every poll of a page that never
    fills."""
    state = state_of(bundle, facilitator=facilitator)
    try:
        state()
    except OSError as exc:
        raise UsageError(f"{bundle}: cannot read the exercise: {exc.strerror or exc}") from None
    return Room(port, state, facilitator=facilitator)
