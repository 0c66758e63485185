"""A second person's answers to a waiting step: the run's inbox and the answer files in it.

The approver (``kmsir approve``/``deny``, with their own AWS credentials) writes one answer
file into ``<incident-dir>/.approvals/<run-id>/`` (outside the bundle: ``verify`` never sees
it); the waiting run reads the inbox, checks each answer and journals what it made of it
(``approval-given`` or ``approval-refused``), copying an accepted answer into the bundle.

An answer carries an ``sts:GetCallerIdentity`` request the approver signed (never sent) with
a signed ``X-Kmsir-Approval`` header: the ``binding``, a sha256 over the run, step, request
nonce, decision, reason and the preview the approver saw. The run sends that request to STS
itself and takes the approver's identity from STS's answer.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from kmsir.errors import EvidenceError
from kmsir.evidence.bundle import canonical, make_private_dirs, sha256_hex, write_new

#: The inbox folders' parent, in the incident's directory (hidden: not a run).
INBOX = ".approvals"
#: The signed header that binds the signature to the answer.
HEADER = "X-Kmsir-Approval"
#: The largest answer file read; a bigger one is refused unread.
MAX_ANSWER_BYTES = 64 * 1024
#: The most new answer files one look at the inbox reads (the rest wait for the next).
MAX_PER_LOOK = 20
#: The most directory entries one look at the inbox lists.
MAX_LISTED = 1000
#: A request nonce (``secrets.token_hex(8)``).
REQUEST = re.compile(r"^[0-9a-f]{16}$")
#: An answer file's name: ``<request>-<token>.json``.
ANSWER_NAME = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}\.json$")

#: The longest value of a signed request's field (a session token is some 1,000 characters;
#: ``aws.approver`` checks the headers against the same limit).
MAX_HEADER = 4096

_SESSION_HEADER = "x-amz-security-" + "token"  # lower case
_Text = Annotated[str, msgspec.Meta(max_length=2000)]
_Header = Annotated[str, msgspec.Meta(max_length=MAX_HEADER)]
_Id = Annotated[str, msgspec.Meta(max_length=200)]


class Signed(msgspec.Struct, frozen=True, kw_only=True):
    """A signed ``sts:GetCallerIdentity`` request, as the approver made it (never sent)."""

    method: Annotated[str, msgspec.Meta(max_length=10)]
    url: _Text
    headers: dict[Annotated[str, msgspec.Meta(max_length=200)], _Header]
    body: _Text


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One answer file: the approver's decision on one request of one step."""

    v: Literal[1] = 1
    run: _Id
    step: _Id
    request: Annotated[str, msgspec.Meta(pattern=REQUEST.pattern)]
    decision: Literal["approve", "deny"]
    reason: _Text | None = None
    saw: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    answered: _Id
    signed: Signed

    @property
    def binding(self) -> str:
        """The binding these fields give (the signed header must carry exactly this)."""
        return binding(
            run=self.run,
            step=self.step,
            request=self.request,
            decision=self.decision,
            reason=self.reason,
            saw=self.saw,
        )

    @property
    def signed_binding(self) -> str | None:
        """The ``X-Kmsir-Approval`` header's value in the signed request, if it has one."""
        wanted = HEADER.lower()
        found = [v for k, v in self.signed.headers.items() if k.lower() == wanted]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Received:
    """One answer file found in the inbox: its id (the file name without ``.json``), its
    bytes, and the answer, or why it cannot be read as one (``problem``)."""

    id: str
    raw: bytes | None
    answer: Answer | None
    problem: str | None = None


def binding(
    *, run: str, step: str, request: str, decision: str, reason: str | None, saw: str
) -> str:
    """sha256 hex of the canonical JSON of what an approver decided on (the signed header)."""
    bound = dict(run=run, step=step, request=request, decision=decision, reason=reason, saw=saw)
    return sha256_hex(canonical(bound))


def preview_sha256(preview: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a step's preview, as journaled (``saw``)."""
    return sha256_hex(canonical(preview))


def inbox(bundle: Path) -> Path:
    """The inbox of the run whose bundle is ``bundle``: ``<incident-dir>/.approvals/<run-id>``,
    from the bundle's resolved path (``.`` or ``sub/..`` name the bundle's folder, never a
    place inside it); ``EvidenceError`` for a path with no folder name (``/``)."""
    try:
        root = bundle.resolve()
    except (OSError, RuntimeError) as exc:
        raise EvidenceError(f"{bundle}: cannot resolve the bundle's path: {exc}") from None
    if root.name in ("", ".", "..") or root.parent == root:
        raise EvidenceError(f"{bundle}: not a run's bundle folder (it has no name)")
    return root.parent / INBOX / root.name


def encode(answer: Answer) -> bytes:
    """An answer file's bytes (indented JSON)."""
    return msgspec.json.format(msgspec.json.encode(answer), indent=2) + b"\n"


#: What an answer kept in the bundle carries instead of the approver's session token.
REDACTED = "(removed: the approver's session token; the journal has the file's sha256 as read)"


def without_token(raw: bytes, answer: Answer) -> bytes:
    """An answer file's bytes to keep in the bundle: ``raw`` as it is, or, when its signed
    request carries the approver's ``X-Amz-Security-Token`` (a live credential while it lasts),
    the answer re-encoded with that header's value replaced by ``REDACTED``."""
    secret = _SESSION_HEADER
    if not any(k.lower() == secret for k in answer.signed.headers):
        return raw
    headers = {k: REDACTED if k.lower() == secret else v for k, v in answer.signed.headers.items()}
    signed = msgspec.structs.replace(answer.signed, headers=headers)
    return encode(msgspec.structs.replace(answer, signed=signed))


def write_answer(bundle: Path, answer: Answer) -> str:
    """Put ``answer`` into the inbox of ``bundle``'s run, atomically and never over another
    file (a new name, linked into place); return its id. ``EvidenceError`` when it cannot."""
    folder = inbox(bundle)
    answer_id = f"{answer.request}-{secrets.token_hex(4)}"
    try:
        make_private_dirs(folder)
        write_new(folder / f"{answer_id}.json", encode(answer))
    except OSError as exc:
        raise EvidenceError(
            f"cannot write the answer into {folder}: {exc.strerror or exc}"
        ) from None
    return answer_id


def read_answers(bundle: Path, *, skip: Collection[str] = ()) -> list[Received]:
    """The answer files of ``bundle``'s run not in ``skip`` (ids already handled), at most
    ``MAX_PER_LOOK`` in name order; each read up to ``MAX_ANSWER_BYTES`` (a bigger one, a link
    or anything but a regular file is a ``problem``, unread). Other names are ignored; at most
    ``MAX_LISTED`` entries not in ``skip`` are looked at (handled ones do not count: however
    many answers came, a new one is found)."""
    folder = inbox(bundle)
    names: list[str] = []
    looked = 0
    try:
        with os.scandir(folder) as listing:
            for item in listing:
                if item.name[:-5] in skip and item.name.endswith(".json"):
                    continue
                looked += 1
                if looked > MAX_LISTED:
                    break
                if ANSWER_NAME.fullmatch(item.name):
                    names.append(item.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise EvidenceError(f"cannot read the answers in {folder}: {exc.strerror or exc}") from None
    return [_read(folder / name) for name in sorted(names)[:MAX_PER_LOOK]]


def _read(path: Path) -> Received:
    answer_id = path.name[:-5]
    try:
        raw = _bounded(path)
    except _Unreadable as exc:
        return Received(answer_id, None, None, str(exc))
    try:
        answer = msgspec.json.decode(raw, type=Answer)
    except msgspec.DecodeError as exc:
        return Received(answer_id, raw, None, f"not an answer file: {str(exc)[:200]}")
    return Received(answer_id, raw, answer)


class _Unreadable(Exception):
    pass


def _bounded(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _Unreadable(f"cannot open the answer file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("the answer is not a regular file")
        if info.st_size > MAX_ANSWER_BYTES:
            raise _Unreadable(
                f"the answer file has {info.st_size:,} bytes, more than {MAX_ANSWER_BYTES:,}"
            )
        data = os.read(fd, MAX_ANSWER_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ANSWER_BYTES:
        raise _Unreadable(f"the answer file has more than {MAX_ANSWER_BYTES:,} bytes")
    return data
