"""The journal anchor of a ``run --anchor-key`` bundle, checked offline.

After every step an anchored run journals an ``anchor`` entry, KMS signs the chain head there,
and ``anchor.json`` keeps the latest signature; the public key is journaled once, at the
start (``anchor-key``). ``verify_anchor`` tells how many entries a valid signature covers and
with which key; ``unsigned_anchor`` tells resume that the run died while KMS signed.
"""

from __future__ import annotations

import json
from pathlib import Path

from kmsir.evidence.bundle import ANCHOR, JOURNAL, NotRegular, read_regular
from kmsir.evidence.signatures import anchor_digest, check_signature, fingerprint
from kmsir.evidence.view import RunView


def verify_anchor(
    root: Path,
    view: RunView,
    problems: list[str],
    notes: list[str],
    trusted_key: str | None,
) -> tuple[int, str, str] | None:
    """The journal anchor of a ``run --anchor-key`` bundle: ``anchor.json`` signs the chain
    head at an ``anchor`` entry with the key the journal recorded (``anchor-key``; a replaced
    file cannot bring its own key, and a journal holds one key only). Anyone who can write
    the bundle can write a key into the journal too: the signature proves the journal against
    ``trusted_key`` when given, else its fingerprint is for the reader to compare. Returns how
    many entries the signature covers, the key's ARN and fingerprint (None: no signature);
    adds problems and notes."""
    keys = view.anchor_keys
    if len({k.record.public_key_pem for k in keys}) > 1:
        problems.append(f"{JOURNAL}: anchor-key entries name different keys (one run, one key)")
        return None
    if keys and trusted_key is not None:
        given, recorded = (
            fingerprint(trusted_key),
            fingerprint(keys[0].record.public_key_pem),
        )
        if given != recorded:
            problems.append(
                f"{JOURNAL}: the journal is anchored with key {recorded}, not the key given "
                f"({given})"
            )
            return None
    anchors = view.signatures
    path = root / ANCHOR
    if not keys:
        if anchors:
            problems.append(f"{JOURNAL}: anchor entries without the anchor-key entry they need")
        elif path.exists():
            problems.append(f"{ANCHOR}: extra file, the run was not anchored")
        return None
    last = anchors[-1] if anchors else None
    try:
        record = json.loads(read_regular(path))
    except FileNotFoundError:
        if last is None:
            notes.append(f"{ANCHOR}: none yet (the run stopped before its first signature)")
        elif last.seq == view.lines:
            notes.append(
                f"{ANCHOR}: not written when the run stopped (its signature over line "
                f"{last.seq}); kmsir resume signs the journal again"
            )
        else:
            problems.append(f"{ANCHOR}: missing (the run signed its journal at line {last.seq})")
        return None
    except NotRegular:
        problems.append(f"{ANCHOR}: not a regular file")
        return None
    except ValueError:
        problems.append(f"{ANCHOR}: not valid JSON")
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    head = record.get("head") if isinstance(record, dict) else None
    signed = next((a for a in anchors if a.seq == seq), None)
    if signed is None or view.hashes[signed.seq - 1] != head:
        problems.append(
            f"{ANCHOR}: signs line {seq!r} with a head the journal does not have there "
            "(lines were removed or altered)"
        )
        return None
    key = next((k.record for k in reversed(keys) if k.seq < signed.seq), None)
    if key is None:
        problems.append(f"{ANCHOR}: no anchor-key entry before the signed line {seq}")
        return None
    digest = anchor_digest(str(view.run_id), signed.seq, str(head))
    problem = check_signature(
        {"sha256": record.get("sha256"), "signature": record.get("signature")},
        digest,
        public_key_pem=key.public_key_pem,
    )
    if problem is not None:
        problems.append(f"{ANCHOR}: the signature over line {seq} does not verify")
        return None
    if last is not None and last.seq > signed.seq:
        if last.seq != view.lines:
            problems.append(
                f"{ANCHOR}: signs line {seq}, but the journal records a later signature at line "
                f"{last.seq} (replaced with an earlier copy?)"
            )
            return None
        notes.append(
            f"{ANCHOR}: its signature over line {last.seq} was not written when the run "
            "stopped; kmsir resume signs the journal again"
        )
    return signed.seq, key.key_arn, fingerprint(key.public_key_pem)


def unsigned_anchor(root: Path, view: RunView) -> bool:
    """True when the journal ends with an anchor entry whose signature ``anchor.json`` does
    not hold: the run stopped while KMS signed it (resume records so in its repair)."""
    if not view.ends_with_anchor:
        return False
    try:
        record = json.loads(read_regular(root / ANCHOR))
    except (OSError, ValueError):
        return True
    return not isinstance(record, dict) or record.get("seq") != view.lines
