"""Practices 4 (rotate key material) and 7 (know key stores and key origin), over the
customer-managed keys in scope; practice 8 (keys as code) is ``practice_automation``'s.

Keys pending deletion (``PendingDeletion``, ``PendingReplicaDeletion``) are not judged by
the rotation and expiry checks: they are on their way out, AWS reports their rotation as off
and refuses to change it. Each such check says how many it left aside. The origin record
lists them with the others: it is a record, not a verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable
from kmsir.actions.audit.keysets import (
    Refused,
    arns,
    day,
    each,
    evidence,
    names,
    refusals,
    refuse,
    staying,
)
from kmsir.actions.audit.practice_automation import AUTOMATION
from kmsir.actions.audit.rules import Result, Rule, cannot

__all__ = ["AUTOMATION", "MAX_ROTATION_DAYS", "ORIGIN", "ROTATION", "custom_key_stores"]

_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/"
#: The longest rotation period the practice accepts: "90 days or less", and 90 is the
#: shortest AWS offers (``RotationPeriodInDays`` is 90-2560, default 365).
MAX_ROTATION_DAYS = 90
#: Origins of keys whose material lives in a custom key store.
_STORE_ORIGINS = frozenset({"AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"})


def _status(key: KeyFacts, refused: Refused) -> Any:
    """The key's GetKeyRotationStatus response, or ``None`` with the refusal recorded."""
    try:
        status = key.need("rotation")
    except Unavailable as exc:
        refuse(refused, exc, key.arn)
        return None
    if status is None:  # gathered without it and nothing says why: nothing is judged
        missing = Unavailable(None, "NotRead", "the key's rotation status was not read")
        refuse(refused, missing, key.arn)
    return status


# -- practice 4 -------------------------------------------------------------------------


def _rotation_enabled(audit: AuditContext) -> Iterator[Result]:
    keys, aside = staying(k for k in audit.customer_keys() if k.rotatable)
    if not keys:
        yield Result(
            "not-applicable",
            detail="no customer-managed symmetric key with key material from AWS KMS" + aside,
        )
        return
    on: list[KeyFacts] = []
    refused: Refused = {}
    for key in keys:
        status = _status(key, refused)
        if status is None:
            continue
        if status.get("KeyRotationEnabled"):
            on.append(key)
            continue
        yield Result(
            "fail",
            (key.arn,),
            f"automatic rotation is off on {key.label()}" + aside,
            evidence([key], "rotation"),
        )
    yield from refusals(refused)
    if on:
        yield Result(
            "pass",
            arns(on),
            f"{len(on)} key(s) rotate automatically: {names(on)}" + aside,
            evidence(on, "rotation"),
        )


def _last_rotation(audit: AuditContext, key: KeyFacts) -> tuple[str, tuple[str, ...]]:
    """The date of the key's most recent rotation (ListKeyRotations), and its evidence."""
    try:
        rotations = audit.pages(
            "kms", "ListKeyRotations", "list_key_rotations", "Rotations", KeyId=key.key_id
        )
    except Unavailable as exc:
        return f"unknown ({exc.permission or exc.code} refused)", ()
    path = audit.evidence(f"keys/{key.key_id}/rotations", {"Rotations": rotations})
    dates = [r["RotationDate"] for r in rotations if r.get("RotationDate")]
    return (day(max(dates)) if dates else "never"), (path,)


def _rotation_period(audit: AuditContext) -> Iterator[Result]:
    keys, aside = staying(k for k in audit.customer_keys() if k.rotatable)
    refused: Refused = {}
    rotating = [k for k in keys if (s := _status(k, refused)) and s.get("KeyRotationEnabled")]
    yield from refusals(refused)
    if not rotating:
        if not refused:
            yield Result(
                "not-applicable",
                detail="no customer-managed key rotates automatically (see rotation-enabled)"
                + aside,
            )
        return
    last = dict(
        zip(
            (k.key_id for k in rotating),
            each(lambda k: _last_rotation(audit, k), rotating),
            strict=True,
        )
    )

    def when(key: KeyFacts) -> str:
        next_date = day((key.rotation or {}).get("NextRotationDate"))
        return f"last rotation {last[key.key_id][0]}, next {next_date}"

    def judged(keys: list[KeyFacts]) -> tuple[str, ...]:
        return evidence(keys, "rotation") + tuple(p for k in keys for p in last[k.key_id][1])

    short: list[KeyFacts] = []
    unknown: list[KeyFacts] = []
    for key in rotating:
        period = (key.rotation or {}).get("RotationPeriodInDays")
        if period is None:
            unknown.append(key)
        elif int(period) > MAX_ROTATION_DAYS:
            yield Result(
                "fail",
                (key.arn,),
                f"{key.label()} rotates every {period} days, more than {MAX_ROTATION_DAYS}; "
                f"{when(key)}" + aside,
                judged([key]),
            )
        else:
            short.append(key)
    if unknown:
        yield Result(
            "could-not-check",
            arns(unknown),
            "GetKeyRotationStatus gave no RotationPeriodInDays (an older API, or an emulator "
            "such as moto): the period cannot be judged; "
            + names(unknown, lambda k: f"{k.label()} ({when(k)})")
            + aside,
            judged(unknown),
            missing="RotationPeriodInDays in the GetKeyRotationStatus response",
        )
    if short:
        yield Result(
            "pass",
            arns(short),
            f"{len(short)} key(s) rotate every {MAX_ROTATION_DAYS} days: "
            + names(short, lambda k: f"{k.label()} ({when(k)})")
            + aside,
            judged(short),
        )


def in_custom_store(key: KeyFacts) -> bool:
    """Whether the key's material lives in a CloudHSM or external key store."""
    return bool(key.metadata.get("CustomKeyStoreId")) or key.origin in _STORE_ORIGINS


def _why_manual(key: KeyFacts) -> str:
    """What keeps the key from rotating automatically, as the keys' kind in a detail."""
    if in_custom_store(key):
        return "key(s) in a custom key store"
    if key.origin == "EXTERNAL":
        return "key(s) with imported key material"
    if key.spec.startswith("HMAC"):
        return "HMAC key(s)"
    return "asymmetric key(s)"


def _rotation_manual(audit: AuditContext) -> Iterator[Result]:
    keys, aside = staying(k for k in audit.customer_keys() if not k.rotatable)
    if not keys:
        yield Result(
            "not-applicable",
            detail="every customer-managed key in scope can rotate automatically" + aside,
        )
        return
    kinds: dict[str, list[KeyFacts]] = {}
    for key in keys:
        kinds.setdefault(_why_manual(key), []).append(key)
    for kind, group in kinds.items():
        yield Result(
            "info",
            arns(group),
            f"{len(group)} {kind} cannot rotate automatically: "
            + names(group, lambda k: f"{k.label()} ({k.spec}, origin {k.origin})")
            + "; rotate them manually: a new key, then the alias moved to it"
            + aside,
            evidence(group, "key"),
        )


ROTATION: tuple[Rule, ...] = (
    Rule(
        id="rotation-enabled",
        practice=4,
        title="Customer-managed symmetric keys rotate their key material automatically",
        severity="medium",
        fix=(
            "Turn on automatic rotation: aws kms enable-key-rotation --key-id KEY_ID "
            "--rotation-period-in-days 90 (console: the key's Key rotation tab; for a "
            "multi-Region key, on its primary)."
        ),
        doc=_GUIDE + "rotating-keys-enable.html",
        judge=_rotation_enabled,
    ),
    Rule(
        id="rotation-period",
        practice=4,
        title=f"Automatic rotation runs every {MAX_ROTATION_DAYS} days",
        severity="low",
        fix=(
            "Shorten the period: aws kms enable-key-rotation --key-id KEY_ID "
            "--rotation-period-in-days 90 (AWS accepts 90 to 2560 days; the default is 365)."
        ),
        doc=_GUIDE + "rotate-keys.html#rotation-period",
        judge=_rotation_period,
        permissions=("kms:ListKeyRotations",),
    ),
    Rule(
        id="rotation-manual",
        practice=4,
        title="Keys that cannot rotate automatically are listed for manual rotation",
        severity="info",
        fix=(
            "Rotate manually: create a new key with the same settings, point the alias at it "
            "(aws kms update-alias --alias-name alias/NAME --target-key-id NEW_KEY_ID) and "
            "keep the old key enabled to decrypt what it protected."
        ),
        doc=_GUIDE + "rotate-keys-manually.html",
        judge=_rotation_manual,
    ),
)


# -- practice 7 -------------------------------------------------------------------------


def custom_key_stores(audit: AuditContext) -> tuple[dict[str, dict[str, Any]], str]:
    """Every custom key store of the Region by id (DescribeCustomKeyStores), read once."""

    def read() -> tuple[dict[str, dict[str, Any]], str]:
        found = audit.call(
            "kms",
            "DescribeCustomKeyStores",
            lambda: audit.pages(
                "kms", "DescribeCustomKeyStores", "describe_custom_key_stores", "CustomKeyStores"
            ),
        )
        path = audit.evidence("kms/custom-key-stores", {"CustomKeyStores": found})
        return {str(s["CustomKeyStoreId"]): s for s in found}, path

    return audit.shared("kms/custom-key-stores", read)


def _material(key: KeyFacts) -> str:
    model = key.metadata.get("ExpirationModel")
    if model == "KEY_MATERIAL_EXPIRES":
        return f"material expires {day(key.metadata.get('ValidTo'))}"
    if model == "KEY_MATERIAL_DOES_NOT_EXPIRE":
        return "material does not expire"
    return "no expiration model reported"


def _store_line(key: KeyFacts, stores: dict[str, dict[str, Any]]) -> str:
    store_id = key.metadata.get("CustomKeyStoreId")
    if not store_id:
        return f"{key.label()}: origin {key.origin}, its key store not named by DescribeKey"
    store = stores.get(str(store_id))
    if store is None:
        return f"{key.label()}: origin {key.origin}, key store {store_id} not listed"
    state = store.get("ConnectionState", "unknown")
    error = f" ({store['ConnectionErrorCode']})" if store.get("ConnectionErrorCode") else ""
    return (
        f"{key.label()}: origin {key.origin}, {store.get('CustomKeyStoreType', 'custom')} key "
        f"store {store_id} ({store.get('CustomKeyStoreName', '')}), connection {state}{error}"
    )


def _origin_recorded(audit: AuditContext) -> Iterator[Result]:
    keys = [k for k in audit.customer_keys() if k.origin != "AWS_KMS" or in_custom_store(k)]
    if not keys:
        yield Result(
            "not-applicable",
            detail="every customer-managed key has key material from AWS KMS, in its own store",
        )
        return
    for key in (k for k in keys if not in_custom_store(k)):
        yield Result(
            "info",
            (key.arn,),
            f"{key.label()}: imported key material (origin {key.origin}), {_material(key)}, "
            f"key state {key.state}",
            evidence([key], "key"),
        )
    stored = [k for k in keys if in_custom_store(k)]
    if not stored:
        return
    try:
        stores, path = custom_key_stores(audit)
    except Unavailable as exc:
        yield cannot(exc, arns(stored))
        return
    for key in stored:
        yield Result("info", (key.arn,), _store_line(key, stores), (*evidence([key], "key"), path))


def _expiry(audit: AuditContext) -> Iterator[Result]:
    keys, aside = staying(k for k in audit.customer_keys() if k.origin == "EXTERNAL")
    if not keys:
        yield Result(
            "not-applicable",
            detail="no customer-managed key with imported key material (origin EXTERNAL)" + aside,
        )
        return
    warning = int(getattr(audit.settings, "expiry_warning_days", 30))
    now = audit.now
    lasting: list[KeyFacts] = []
    unknown: list[KeyFacts] = []
    for key in keys:
        model = key.metadata.get("ExpirationModel")
        valid_to = key.metadata.get("ValidTo")
        if model == "KEY_MATERIAL_DOES_NOT_EXPIRE":
            lasting.append(key)
        elif model == "KEY_MATERIAL_EXPIRES" and isinstance(valid_to, datetime):
            if valid_to > now + timedelta(days=warning):
                lasting.append(key)
                continue
            left = -((now - valid_to) // timedelta(days=1))  # whole days, rounded up
            when = (
                f"expired on {day(valid_to)}"
                if valid_to <= now
                else f"expires in {left} day(s), on {day(valid_to)}"
            )
            yield Result(
                "fail",
                (key.arn,),
                f"imported key material of {key.label()} {when} (warning at {warning} days); "
                f"key state {key.state}" + aside,
                evidence([key], "key"),
            )
        elif model is None and key.state == "PendingImport":
            yield Result(
                "info",
                (key.arn,),
                f"{key.label()} holds no key material (PendingImport): never imported, or "
                "deleted; it is unusable until the same material is imported" + aside,
                evidence([key], "key"),
            )
        else:
            unknown.append(key)
    if unknown:
        yield Result(
            "could-not-check",
            arns(unknown),
            "DescribeKey reports no ExpirationModel/ValidTo for imported key material in a "
            "usable state (an emulator such as moto does not model imported material): "
            + names(unknown, lambda k: f"{k.label()} ({k.state})")
            + aside,
            evidence(unknown, "key"),
            missing="ExpirationModel and ValidTo in the DescribeKey response",
        )
    if lasting:
        yield Result(
            "pass",
            arns(lasting),
            f"{len(lasting)} key(s) keep their imported material beyond {warning} days: "
            + names(lasting, lambda k: f"{k.label()} ({_material(k)})")
            + aside,
            evidence(lasting, "key"),
        )


ORIGIN: tuple[Rule, ...] = (
    Rule(
        id="key-origin-recorded",
        practice=7,
        title="Keys with imported material or in custom key stores are recorded",
        severity="info",
        fix=(
            "Keep these keys in the incident runbook: imported material must be kept (and "
            "reimported) by you, and a custom key store needs its CloudHSM cluster or external "
            "key manager connected (aws kms describe-custom-key-stores)."
        ),
        doc=_GUIDE + "key-store-overview.html",
        judge=_origin_recorded,
        permissions=("kms:DescribeCustomKeyStores",),
    ),
    Rule(
        id="imported-material-expiry",
        practice=7,
        title="Imported key material does not expire within the warning period",
        severity="high",
        fix=(
            "Reimport the same key material with a later expiry before it lapses (aws kms "
            "get-parameters-for-import, then aws kms import-key-material --key-id KEY_ID "
            "--expiration-model KEY_MATERIAL_EXPIRES --valid-to DATE ...), or import it with "
            "KEY_MATERIAL_DOES_NOT_EXPIRE."
        ),
        doc=_GUIDE + "importing-keys-import-key-material.html",
        judge=_expiry,
    ),
)
