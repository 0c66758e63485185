"""The room's screen in headless Chromium: it follows the players' journal by itself, asks
nothing of any address but 127.0.0.1, and the players' version holds no hidden string."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kmsir.evidence.bundle import JOURNAL
from kmsir.sandbox import scenario as scenarios
from kmsir.tabletop import facilitation, room
from tests.clikit import cli

from .conftest import played
from .test_report import chromium
from .test_tabletop_facilitator import players_bundle, session_of

needs_chromium = pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="needs Chromium (apt-get install chromium); .ci/run installs it",
)

#: Browser switches: no background traffic of Chromium's own where it can be turned off,
#: and what is left goes to a closed port on 127.0.0.1 (a dead proxy) and resolves no name,
#: so nothing this test starts can leave the machine.
QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-pings",
    "--disable-domain-reliability",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]):\d+$")


@pytest.fixture(scope="module")
def players(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A players' bundle of ransom-deletion, played to the end (copied and cut by tests)."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    with played("ransom-deletion", tmp_path_factory.mktemp("played")) as (_, result):
        pass
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value
    return result.bundle


def cut_before_decision(bundle: Path, workdir: Path, step: str) -> tuple[Path, bytes]:
    """A copy of ``bundle`` whose journal stops before the decision at ``step``: the run as
    it stood while the team was being asked. Returns it and the decision's journal line."""
    copy = workdir / "evidence" / bundle.parent.name / bundle.name
    shutil.copytree(bundle, copy)
    lines = (copy / JOURNAL).read_bytes().splitlines(keepends=True)
    at = next(
        i
        for i, line in enumerate(lines)
        if json.loads(line)["step"] == step and json.loads(line)["type"] == "decision"
    )
    (copy / JOURNAL).write_bytes(b"".join(lines[:at]))
    return copy, lines[at]


def hidden_strings(scenario_id: str) -> list[str]:
    """The texts only the scenario's hidden parts hold (not in its title or briefing)."""
    world = scenarios.load(scenario_id)
    assert world.ground_truth is not None
    texts = [world.ground_truth.summary, *(m.what for m in world.ground_truth.timeline)]
    texts += [spec.why for spec in world.expected.values()]
    texts += [e.what for e in world.evidence_to_see]
    told = f"{world.title} {world.briefing}"
    return [t for t in texts if t and t not in told]


def get(server: room.Room, path: str, host: str | None = None) -> tuple[int, Any, bytes]:
    """One GET to the room: status, headers, body (``host``: another Host header)."""
    host_port = server.server_address
    connection = http.client.HTTPConnection(str(host_port[0]), int(host_port[1]), timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


@contextmanager
def serving(state: Callable[[], Any], *, facilitator: bool) -> Iterator[room.Room]:
    server = room.Room(0, state, facilitator=facilitator)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def open_page(url: str, workdir: Path, *, budget_ms: int) -> tuple[str, dict[str, Any]]:
    """The page's DOM after ``budget_ms`` of (virtual) time, and Chromium's network log."""
    browser = chromium()
    assert browser is not None
    net = workdir / "net-log.json"
    done = subprocess.run(
        [
            browser, *QUIET, f"--user-data-dir={workdir / 'profile'}", f"--log-net-log={net}",
            f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout, json.loads(net.read_text())


def network(log: dict[str, Any]) -> tuple[list[tuple[str, str]], set[str]]:
    """From a Chromium net log: each URL request (url, initiator) and each address a byte
    was sent to or a TCP connection was attempted with (what could leave the machine)."""
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    requests, addresses, sockets, sent = [], set(), {}, set()
    for event in log["events"]:
        kind, params = names[event["type"]], event.get("params") or {}
        source = event["source"]["id"]
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            requests.append((params["url"], params.get("initiator", "")))
        if "address" in params and kind in ("TCP_CONNECT_ATTEMPT", "UDP_CONNECT"):
            sockets[source] = params["address"]
            if kind == "TCP_CONNECT_ATTEMPT":
                addresses.add(params["address"])
        if kind.endswith("BYTES_SENT"):
            sent.add(source)
    addresses |= {sockets[s] for s in sent if s in sockets}
    return requests, addresses


@needs_chromium
def test_the_room_shows_a_decision_soon_after_its_journal_entry(
    players: Path, tmp_path: Path
) -> None:
    """The page is open while the team is asked whether to enable the key again; the
    decision is journaled once the page had its first state, and the page shows it at its
    next poll (a second later) with no reload. Nothing it asks for leaves 127.0.0.1, and
    nothing of the scenario's hidden parts reaches the room (page or state)."""
    bundle, decision = cut_before_decision(players, tmp_path, "decide")
    answered: list[dict[str, Any]] = []
    state = room.state_of(bundle, facilitator=False)

    def journal_grows_after_the_first_answer() -> dict[str, Any]:
        answer: dict[str, Any] = state()
        answered.append(answer)
        if len(answered) == 1:
            with (bundle / JOURNAL).open("ab") as journal:  # as the players' process does
                journal.write(decision)
        return answer

    with serving(journal_grows_after_the_first_answer, facilitator=False) as server:
        dom, log = open_page(server.url, tmp_path, budget_ms=4000)
        _, headers, body = get(server, "/")
        html, csp = body.decode(), headers["Content-Security-Policy"]
        served = json.loads(get(server, "/state.json")[2])
        asked = list(server.requests)

    first = json.dumps(answered[0])
    assert "keep-disabled" not in first and answered[0]["status"] == "in progress"
    said = answered[-1]["status"]  # the view's word for a run going on, as it is
    assert f'<span id="status" class="muted">{said}</span>' in dom
    timeline = dom[dom.index('id="timeline"') :]
    rows = re.findall(r'<tr class="kind-decision">(.*?)</tr>', timeline, re.S)
    assert any("<td>decide</td>" in row and "keep-disabled" in row for row in rows), timeline
    # it polls about once a second: the decision was shown within a second of the append
    polls = [path for _, path, _ in asked if path == "/state.json"]
    assert len(polls) == len(answered) and 3 <= len(answered) - 1 <= 6  # - our own fetch
    assert {(method, path, status) for method, path, status in asked} == {
        ("GET", "/", 200),
        ("GET", "/state.json", 200),
    }

    requests, addresses = network(log)
    origin = server.url.rstrip("/")
    page_requests = [url for url, initiator in requests if initiator == origin]
    assert page_requests and all(url == f"{origin}/state.json" for url in page_requests)
    assert f"{origin}/" in [url for url, _ in requests]
    assert addresses and all(LOOPBACK.match(a) for a in addresses), addresses

    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert html.count(f'nonce="{nonce[1]}"') == 2  # the one style and the one script
    assert not re.search(r"(src|href)\s*=", html)  # no asset, no link
    assert "innerHTML" not in html and "facilitator only" not in html
    for secret in hidden_strings("ransom-deletion"):
        assert secret not in dom and secret not in json.dumps(served), secret


@needs_chromium
def test_the_facilitators_room_adds_the_hidden_parts(players: Path, tmp_path: Path) -> None:
    hidden = hidden_strings("ransom-deletion")
    state = room.state_of(players, facilitator=True)
    at = "2026-12-02T08:21:34Z"

    def with_an_inject_and_a_note() -> dict[str, Any]:
        view: dict[str, Any] = state()
        fired = [{"at": at, "say": "A ransom email arrives", "trigger": "timer"}]
        noted = [{"at": at, "text": "they never looked at the grants", "by": "fac"}]
        return {**view, "injects": fired, "observations": noted}

    with serving(with_an_inject_and_a_note, facilitator=True) as server:
        dom, _ = open_page(server.url, tmp_path, budget_ms=1500)
    summary = hidden[0]
    assert summary in dom[dom.index('id="ground-truth"') :]
    # times never wrap ("08:2" over "1:34"): their cells do not break
    for table in ("injects", "observations"):
        shown = dom[dom.index(f'id="{table}"') :]
        assert shown.index('<td class="time">08:21:34</td>') < shown.index("</table>"), table
    decisions = dom[dom.index('id="decisions"') :]
    assert re.search(r"<td>decide</td><td>keep-disabled</td><td>keep-disabled</td>", decisions)
    assert all(secret in json.dumps(state()) for secret in hidden)


@needs_chromium
def test_the_room_answers_only_requests_addressed_to_it(players: Path) -> None:
    """A page elsewhere that rebinds a name of its own onto 127.0.0.1 gets nothing."""
    with serving(room.state_of(players, facilitator=False), facilitator=False) as server:
        assert server.server_address[0] == "127.0.0.1"
        refused, _, said = get(server, "/state.json", host="evil.test")
        unknown = get(server, "/journal.jsonl")[0]
        fine = get(server, "/state.json", host=f"localhost:{server.server_address[1]}")[0]
    assert (refused, unknown, fine) == (421, 404, 200)
    assert b"orders" not in said


@pytest.fixture
def served_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kmsir tabletop room`` stops as soon as it would serve (as Ctrl-C stops it)."""

    def stop(self: room.Room, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(room.Room, "serve_forever", stop)


@pytest.mark.usefixtures("served_at_once")
def test_the_room_finds_the_run_from_any_directory(tmp_path: Path) -> None:
    """The players' session recorded its bundle relative to where the players started; the
    room is opened from another directory with --evidence-dir, and from inside the
    evidence directory with ``--evidence-dir .``."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    session_of(players, evidence, bundle=f"evidence/{players.parent.name}/{players.name}", pid=1)
    (tmp_path / "elsewhere").mkdir()
    for cwd, where in ((tmp_path / "elsewhere", evidence), (evidence, Path("."))):
        ran = cli("tabletop", "room", players.name, "--evidence-dir", where, cwd=cwd)
        assert ran.exit_code == 0, ran.output
        bundle = where / players.parent.name / players.name
        assert f"kmsir tabletop room: the room's screen for {bundle}" in ran.stdout
        assert "http://127.0.0.1:" in ran.stdout


@pytest.mark.usefixtures("served_at_once")
def test_the_room_refuses_what_it_cannot_show_before_serving(tmp_path: Path) -> None:
    """A facilitator's bundle, a run whose scenario is gone, a run played in no scenario:
    refused in one line before any URL is printed (never a page answered 500 forever)."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    followed = facilitation.start(evidence, facilitation.locate(evidence, players.name))
    followed.close()
    cases = {
        followed.bundle: "is a facilitator's bundle, not the players' run",
        players_bundle(evidence, source="no-such-scenario"): "no scenario 'no-such-scenario'",
        players_bundle(evidence, source=""): "was not played in a sandbox scenario",
    }
    for bundle, why in cases.items():
        for facilitator in ([], ["--facilitator"]):
            ran = cli("tabletop", "room", bundle, *facilitator, "--evidence-dir", evidence)
            assert ran.exit_code == 2 and ran.stdout == "", ran.output
            assert len(ran.stderr.splitlines()) == 1 and why in ran.stderr, ran.stderr
