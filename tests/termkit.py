"""Drive a real terminal program under tmux: type keys, read what the screen shows.

Each ``Terminal`` has its own tmux server (its own socket), so tests never touch a user's
tmux sessions. The program runs with exactly the environment given, and the pane stays open
after it exits so its last screen and exit status can be read.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TMUX = shutil.which("tmux")
_numbers = itertools.count()


class Terminal:
    """One program in a tmux pane of ``width`` x ``height``."""

    def __init__(
        self,
        workdir: Path,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        width: int = 140,
        height: int = 50,
    ) -> None:
        assert TMUX is not None, "tmux is not installed"
        self.socket = f"kmsir-test-{os.getpid()}-{next(_numbers)}"
        config = workdir / "tmux.conf"
        config.write_text("set -g history-limit 50000\nset -g remain-on-exit on\n")
        script = workdir / "program.sh"
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        script.write_text(
            f"cd {shlex.quote(str(workdir))}\n"
            f"env -i {assignments} {shlex.join(command)}\n"
            'echo "[exit status $?]"\n'
        )
        self._tmux(
            "-f", str(config), "new-session", "-d", "-s", "main",
            "-x", str(width), "-y", str(height), f"sh {shlex.quote(str(script))}",
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        """Everything the pane showed, scrollback included, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "main")

    def wait_for(self, text: str, *, timeout: float = 60, count: int = 1) -> str:
        """Wait until ``text`` has appeared ``count`` times; return the screen."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if shown.count(text) >= count:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {text!r}; it shows:\n{shown}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name (``Enter``, ``Down``, ``C-c``)."""
        for key in keys:
            self._tmux("send-keys", "-t", "main", key)
            time.sleep(0.15)  # let the prompt redraw between keys

    def run_steps(self, *step_ids: str) -> None:
        """Answer "Run it" (the first choice) at each of these steps' previews, in order."""
        for step_id in step_ids:
            self.wait_for(f"? Step {step_id}:")
            self.keys("Enter")

    def type(self, text: str) -> None:
        """Type ``text`` literally (no Enter)."""
        self._tmux("send-keys", "-t", "main", "-l", text)
        time.sleep(0.15)

    def exit_status(self, *, timeout: float = 120) -> int:
        """Wait for the program to end; its exit status."""
        shown = self.wait_for("[exit status ", timeout=timeout)
        tail = shown.rsplit("[exit status ", 1)[1]
        return int(tail.split("]", 1)[0])

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True)
