"""Every KMS event CloudTrail records, what kind it is, and how much it matters.

One entry per event name: every operation of the KMS API (botocore's ``kms`` service model;
a test fails when botocore knows an operation this table does not) and the operations KMS
logs for itself, with ``eventType: AwsServiceEvent`` and no caller (``DeleteKey`` at the end of
a deletion's waiting period, ``DeleteExpiredKeyMaterial``, ``RotateKey``,
``SynchronizeMultiRegionKey``: the internal operations listed in the KMS Developer Guide,
https://docs.aws.amazon.com/kms/latest/developerguide/logging-using-cloudtrail.html, and
https://docs.aws.amazon.com/kms/latest/developerguide/ct-deleteexpiredkeymaterial.html).

Each entry has a ``kind`` ("change" to a key, alias, grant or key store; "crypto", a use of a
key; "read"; "service", an event KMS logs for itself), a ``severity``, a plain ``title`` and a
one-line ``why``. ``classify`` reads one event (through ``fields``: events are
attacker-controlled) and refines the entry for it: a policy set with the lockout safety check
bypassed is critical, a grant retired by an AWS service is routine. A name the table does not
know classifies as kind "unknown" (info), so a new event is reported, never dropped (a name
that is no API name at all, which only a forged record has, is quoted in ``why`` only).

The trail events (``TRAIL_EVENTS``) are CloudTrail's own: the calls that can make a trail stop
seeing KMS. They name no key, yet every source collects them with the key's events.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from kmsir.trail.events import clip
from kmsir.trail.fields import by_aws_service, name_of, params_of, source_of

Kind = Literal["change", "crypto", "read", "service", "unknown"]
Severity = Literal["info", "low", "medium", "high", "critical"]

KMS_SOURCE = "kms.amazonaws.com"
TRAIL_SOURCE = "cloudtrail.amazonaws.com"
#: CloudTrail calls that can stop a trail logging KMS: selectors that leave KMS out, logging
#: stopped, the trail deleted. (``CreateTrail``/``UpdateTrail`` take no selectors; a new trail
#: logs every management event until ``PutEventSelectors`` says otherwise.)
TRAIL_EVENTS = frozenset({"PutEventSelectors", "StopLogging", "DeleteTrail"})


@dataclass(frozen=True)
class KmsEvent:
    """What one KMS event is: its name (cut), kind, severity, plain title and why."""

    name: str
    kind: Kind
    severity: Severity
    title: str
    why: str


#: name -> (kind, severity, title, why). Severities: critical when data may be lost or the key
#: handed over, high when it stops working or changes hands, medium when access or its record
#: changes, low for routine changes a responder still reads, info for what KMS does itself.
CATALOGUE: dict[str, tuple[Kind, Severity, str, str]] = {
    # -- the key's life ------------------------------------------------------------------
    "CreateKey": ("change", "info", "Key created", "A new key: who uses it next matters."),
    "ScheduleKeyDeletion": (
        "change",
        "critical",
        "Key scheduled for deletion",
        "Once deleted, everything encrypted under the key is lost.",
    ),
    "CancelKeyDeletion": (
        "change",
        "low",
        "Key deletion cancelled",
        "The key is kept, but stays disabled until someone enables it.",
    ),
    "DisableKey": (
        "change",
        "high",
        "Key disabled",
        "Every cryptographic use of the key fails while it is disabled.",
    ),
    "EnableKey": ("change", "low", "Key enabled", "The key can be used again."),
    "UpdateKeyDescription": (
        "change",
        "low",
        "Key description changed",
        "Descriptions guide people choosing a key; a misleading one misdirects them.",
    ),
    "PutKeyPolicy": (
        "change",
        "high",
        "Key policy changed",
        "The key policy decides who may use and manage the key.",
    ),
    "TagResource": (
        "change",
        "medium",
        "Key tags changed",
        "Tags can grant access (attribute-based access control) and steer automation.",
    ),
    "UntagResource": (
        "change",
        "medium",
        "Key tags removed",
        "Tags can grant access (attribute-based access control) and steer automation.",
    ),
    # -- aliases and grants --------------------------------------------------------------
    "CreateAlias": ("change", "low", "Alias created", "Applications may find the key by it."),
    "UpdateAlias": (
        "change",
        "high",
        "Alias repointed",
        "Applications that use the alias now encrypt under another key.",
    ),
    "DeleteAlias": (
        "change",
        "high",
        "Alias deleted",
        "Applications that use the alias stop working.",
    ),
    "CreateGrant": (
        "change",
        "high",
        "Grant created",
        "Grants give access without a policy change.",
    ),
    "RetireGrant": (
        "change",
        "medium",
        "Grant retired",
        "Access given by a grant ends: applications that relied on it fail.",
    ),
    "RevokeGrant": (
        "change",
        "medium",
        "Grant revoked",
        "Access given by a grant ends: applications that relied on it fail.",
    ),
    # -- rotation ------------------------------------------------------------------------
    "EnableKeyRotation": (
        "change",
        "info",
        "Key rotation enabled",
        "KMS now rotates the key material on a schedule.",
    ),
    "DisableKeyRotation": (
        "change",
        "medium",
        "Key rotation disabled",
        "Without rotation the same key material protects data indefinitely.",
    ),
    "RotateKeyOnDemand": (
        "change",
        "low",
        "Key material rotated on demand",
        "New data is encrypted under new material; old data still decrypts.",
    ),
    # -- imported key material -----------------------------------------------------------
    "GetParametersForImport": (
        "change",
        "low",
        "Import of key material prepared",
        "The first step of putting key material from outside KMS into the key.",
    ),
    "ImportKeyMaterial": (
        "change",
        "high",
        "Key material imported",
        "Material from outside KMS in the key: whoever holds a copy can decrypt outside AWS.",
    ),
    "DeleteImportedKeyMaterial": (
        "change",
        "critical",
        "Imported key material deleted",
        "The key cannot decrypt until the same material is imported again.",
    ),
    # -- multi-Region keys ---------------------------------------------------------------
    "ReplicateKey": (
        "change",
        "medium",
        "Key replicated to another Region",
        "A replica shares the key material: data encrypted here decrypts there.",
    ),
    "UpdatePrimaryRegion": (
        "change",
        "medium",
        "Primary Region of a multi-Region key changed",
        "The primary key decides the shared properties of every replica.",
    ),
    # -- custom key stores ---------------------------------------------------------------
    "CreateCustomKeyStore": (
        "change",
        "low",
        "Custom key store created",
        "Keys in it live outside KMS's own hardware.",
    ),
    "ConnectCustomKeyStore": (
        "change",
        "low",
        "Custom key store connected",
        "Keys in the store can be used again.",
    ),
    "UpdateCustomKeyStore": (
        "change",
        "high",
        "Custom key store changed",
        "The store's cluster, proxy or credentials decide where its keys' material lives.",
    ),
    "DisconnectCustomKeyStore": (
        "change",
        "high",
        "Custom key store disconnected",
        "Keys in a disconnected key store cannot be used.",
    ),
    "DeleteCustomKeyStore": (
        "change",
        "high",
        "Custom key store deleted",
        "Keys in a deleted key store cannot be used.",
    ),
    # -- events KMS logs for itself (eventType AwsServiceEvent) --------------------------
    "DeleteKey": (
        "service",
        "critical",
        "KMS deleted the key at the end of its waiting period",
        "The key and everything encrypted under it can no longer be used.",
    ),
    "DeleteExpiredKeyMaterial": (
        "service",
        "critical",
        "KMS deleted expired imported key material",
        "The key cannot decrypt until the same material is imported again.",
    ),
    "RotateKey": (
        "service",
        "info",
        "KMS rotated the key material",
        "Rotation, automatic or asked for, as the key's settings say.",
    ),
    "SynchronizeMultiRegionKey": (
        "service",
        "info",
        "KMS synchronized a multi-Region key with its replicas",
        "KMS copies the primary key's shared properties to its replicas.",
    ),
    # -- uses of a key (the activity rules look at these) --------------------------------
    **{
        name: ("crypto", "info", f"{name} call", "A use of the key.")
        for name in (
            "Decrypt",
            "Encrypt",
            "ReEncrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "GenerateMac",
            "VerifyMac",
            "Sign",
            "Verify",
            "GenerateRandom",
            "DeriveSharedSecret",
            "Encapsulate",
            "Decapsulate",
        )
    },
    # -- reads ---------------------------------------------------------------------------
    **{
        name: ("read", "info", f"{name} call", "A read: nothing changes.")
        for name in (
            "DescribeKey",
            "DescribeCustomKeyStores",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "GetKeyLastUsage",
            "GetPublicKey",
            "ListAliases",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "ListKeys",
            "ListResourceTags",
            "ListRetirableGrants",
        )
    },
}

#: KMS's cryptographic operations: uses of a key (or, GenerateRandom, of KMS), read-only.
CRYPTO_OPERATIONS = frozenset(n for n, entry in CATALOGUE.items() if entry[0] == "crypto")
#: Uses of a key and reads: no finding of their own (a fast pre-check over millions of them).
QUIET = frozenset(n for n, entry in CATALOGUE.items() if entry[0] in ("crypto", "read"))
#: Calls that set a key policy and may bypass its lockout safety check, titled when they do.
_BYPASS_TITLES = {
    "PutKeyPolicy": "Key policy changed with the lockout safety check bypassed",
    "CreateKey": "Key created with the lockout safety check bypassed",
    "ReplicateKey": "Key replicated with the lockout safety check bypassed",
}
#: What an API operation's name looks like (KMS's are CamelCase words).
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,99}")
#: Events AWS's own services make all the time: routine when a service makes them.
_ROUTINE_FOR_SERVICES = frozenset({"RetireGrant"})


def is_trail_event(event: dict[str, Any]) -> bool:
    """Whether the event is one of CloudTrail's own that can stop a trail logging KMS."""
    return source_of(event) == TRAIL_SOURCE and name_of(event) in TRAIL_EVENTS


def lockout_bypassed(event: dict[str, Any]) -> bool:
    """Whether a ``PutKeyPolicy``/``CreateKey``/``ReplicateKey`` set its policy with the
    lockout safety check bypassed (a policy that may lock every administrator out)."""
    flag = params_of(event).get("bypassPolicyLockoutSafetyCheck")
    return flag is True or (isinstance(flag, str) and flag.lower() == "true")


def classify(event: dict[str, Any]) -> KmsEvent | None:
    """What the event is, or ``None`` when it is not a KMS event (its ``eventSource`` is
    another service's; an event without one is taken for KMS's)."""
    source = source_of(event)
    if source and source != KMS_SOURCE:
        return None
    name = name_of(event)
    entry = CATALOGUE.get(name)
    if entry is None:
        shown = clip(name, 100) if name else "(no name)"
        if _API_NAME.fullmatch(name):
            title = f"Unknown KMS event {name}"
            why = "An event kmsir does not know: read it in the matched events."
        else:  # a forged name: titles are headings and table cells, so it is only quoted
            title = "Unknown KMS event with a malformed name"
            why = f"An event named {json.dumps(shown)}, which no KMS operation is."
        return KmsEvent(shown, "unknown", "info", title, why)
    kind, severity, title, why = entry
    if name in _BYPASS_TITLES and lockout_bypassed(event):
        severity, title = "critical", _BYPASS_TITLES[name]
        why = (
            "KMS checks that a new policy leaves someone able to manage the key; the caller "
            "switched that check off, which an attacker does to lock the owner out."
        )
    elif name in _ROUTINE_FOR_SERVICES and by_aws_service(event):
        severity = "low"
        why += " An AWS service retired it (services retire their own grants)."
    return KmsEvent(name, kind, severity, title, why)
