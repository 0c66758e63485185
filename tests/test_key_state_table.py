"""AWS's key-state table, cell by cell, against the sandbox: plain boto3, no kmsir code between.

Reference: "Key states of AWS KMS keys", KMS developer guide,
https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html -- transcribed in
tests/data/key_state_table.yaml (which says where each cell comes from). Every operation row
is called on a key in each state the sandbox can produce, and must succeed or fail with the
error code the table gives. The keys of each state are built once for the module; operations
that change a key's state (or its material) get a fresh key in that state each. A sample of
cells is played again through ``sandbox serve`` (one loopback server), as any other AWS client
would see them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from kmsir.sandbox import DUMMY_CREDENTIALS, Sandbox
from kmsir.sandbox import scenario as scenarios

TABLE = yaml.safe_load((Path(__file__).parent / "data" / "key_state_table.yaml").read_text())
STATES: list[str] = TABLE["states"]
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/key-state-grantee"
#: Operations that change the key's state or material: each cell gets a key of its own.
MUTATING = frozenset(
    {
        "CancelKeyDeletion",
        "DisableKey",
        "EnableKey",
        "ScheduleKeyDeletion",
        "DeleteImportedKeyMaterial",
        "ImportKeyMaterial",
    }
)
SIGNING = {"SigningAlgorithm": "RSASSA_PSS_SHA_256", "MessageType": "RAW"}


@dataclass(frozen=True)
class Cell:
    """One cell: the table's mark, and what the sandbox must answer (``None``: N/A)."""

    operation: str
    state: str
    mark: str
    outcome: str | None  # "ok", an error code, or None (no such key can be in that state)
    key_kind: str  # SYMMETRIC_DEFAULT or SIGN_VERIFY


def _footnotes(mark: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", mark)]


def parse(operation: str, state: str, text: str, kind: str) -> Cell:
    """A cell of the fixture as the test reads it (see the fixture's header)."""
    mark, _, chosen = (part.strip() for part in str(text).partition("->"))
    codes = {n: TABLE["footnotes"][n]["code"] for n in _footnotes(mark)}
    if mark == "N/A":
        outcome = None
    elif chosen:  # the table leaves a choice: the fixture records the sandbox's case
        assert mark.startswith("?") or " or " in mark, f"{operation}/{state}: {mark} has no choice"
        assert mark in TABLE["cases"], f"{operation}/{state}: no case recorded for {mark}"
        allowed = set(codes.values()) | ({"ok"} if mark.startswith("?") else set())
        assert chosen in allowed, f"{operation}/{state}: {chosen} is not one of {allowed}"
        outcome = chosen
    elif mark.startswith("✓"):
        outcome = "ok"
    elif mark.startswith("X"):
        assert len(set(codes.values())) == 1 or " or " not in mark, mark
        outcome = next(code for code in codes.values() if code)
    else:
        raise AssertionError(f"{operation}/{state}: unreadable cell {text!r}")
    return Cell(operation, state, mark, outcome, kind)


def cells() -> list[Cell]:
    table = []
    for operation, row in TABLE["operations"].items():
        kind = row.get("key", "SYMMETRIC_DEFAULT")
        for state in STATES:
            table.append(parse(operation, state, row[state], kind))
    return table


CELLS = cells()
APPLICABLE = [cell for cell in CELLS if cell.outcome is not None]


def test_the_fixture_is_the_whole_table() -> None:
    """Every row has every state; the counts are what the issue's note reports."""
    for operation, row in TABLE["operations"].items():
        assert set(row) - {"key"} == set(STATES), operation
    assert len(TABLE["operations"]) == 38
    assert (len(CELLS), len(APPLICABLE)) == (228, 222)


# -- the keys -------------------------------------------------------------------------------


@dataclass
class Built:
    """A key in a given state, and what was made with it while it could still be used."""

    id: str
    arn: str
    state: str
    alias: str
    grants: dict[str, str]
    retirer: str
    policy: str
    ciphertext: bytes = b""
    signature: bytes = b""
    material: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


class World:
    """The module's sandbox and a factory of keys in each state."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.kms = sandbox.session().client("kms")
        self.counter = itertools.count(1)
        self.shared: dict[tuple[str, str], Built] = {}

    def key(self, state: str, kind: str, *, fresh: bool) -> Built:
        if fresh:
            return self.make(state, kind)
        if (state, kind) not in self.shared:
            self.shared[state, kind] = self.make(state, kind)
        return self.shared[state, kind]

    def make(self, state: str, kind: str) -> Built:
        kms, n = self.kms, next(self.counter)
        spec = {} if kind == "SYMMETRIC_DEFAULT" else {"KeySpec": "RSA_2048", "KeyUsage": kind}
        material = b""
        if state == "Unavailable":
            store = kms.create_custom_key_store(
                CustomKeyStoreName=f"key-state-{n}",
                CloudHsmClusterId=f"cluster-keystate{n:04d}",  # one cluster per store
                TrustAnchorCertificate=TRUST_ANCHOR,
                KeyStorePassword="kmsPswd-0001",
            )["CustomKeyStoreId"]
            kms.connect_custom_key_store(CustomKeyStoreId=store)
            meta = kms.create_key(CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")["KeyMetadata"]
        elif state == "PendingImport":
            meta = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
            material = bytes((n + i) % 256 for i in range(32))
            self.import_material(meta["KeyId"], material)
        else:
            multi = {"MultiRegion": True} if state == "PendingReplicaDeletion" else {}
            meta = kms.create_key(**spec, **multi)["KeyMetadata"]
        key_id = meta["KeyId"]
        built = Built(
            id=key_id,
            arn=meta["Arn"],
            state=state,
            alias=f"alias/key-state-{n}",
            grants={},
            retirer=f"arn:aws:iam::{ACCOUNT}:role/key-state-retirer-{n}",
            policy=kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"],
            material=material,
        )
        # what needs a usable key, made before it leaves the Enabled state
        if kind == "SYMMETRIC_DEFAULT":
            built.ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"table")["CiphertextBlob"]
        else:
            built.signature = kms.sign(KeyId=key_id, Message=b"table", **SIGNING)["Signature"]
        kms.create_alias(AliasName=built.alias, TargetKeyId=key_id)
        for purpose in ("retire", "revoke", "listed"):
            built.grants[purpose] = kms.create_grant(
                KeyId=key_id,
                GranteePrincipal=ROLE,
                Operations=["DescribeKey"],
                RetiringPrincipal=built.retirer,
            )["GrantId"]
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "purpose", "TagValue": "key-state"}])
        # now into the state
        if state == "Disabled":
            kms.disable_key(KeyId=key_id)
        elif state == "PendingDeletion":
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        elif state == "PendingReplicaDeletion":
            kms.replicate_key(KeyId=key_id, ReplicaRegion="us-east-1")
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        elif state == "PendingImport":
            kms.delete_imported_key_material(KeyId=key_id)
        elif state == "Unavailable":
            kms.disconnect_custom_key_store(CustomKeyStoreId=meta["CustomKeyStoreId"])
        reported = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
        assert reported == state, f"a key built to be {state} reports {reported}"
        return built

    def import_material(self, key_id: str, material: bytes) -> None:
        token, wrapped = self.wrap(key_id, material)
        self.kms.import_key_material(
            KeyId=key_id,
            ImportToken=token,
            EncryptedKeyMaterial=wrapped,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    def wrap(self, key_id: str, material: bytes) -> tuple[bytes, bytes]:
        """An import token for ``key_id`` and ``material`` wrapped with its public key."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        params = self.kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        public = serialization.load_der_public_key(params["PublicKey"])
        oaep = padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
        return params["ImportToken"], public.encrypt(material, oaep)  # type: ignore[union-attr]


#: A CloudHSM cluster's trust anchor certificate, as CreateCustomKeyStore takes it (PEM).
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


# -- what each operation does with the key --------------------------------------------------

Call = Callable[[Any, Built, World], Any]


def _import(kms: Any, key: Built, world: World) -> Any:
    if key.material:  # an EXTERNAL key: its own token and material
        return world.import_material(key.id, key.material)
    # any other key: a valid token and wrapped material, of another key (origin comes first)
    donor = world.kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    token, wrapped = world.wrap(donor, bytes(32))
    return kms.import_key_material(
        KeyId=key.id,
        ImportToken=token,
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def _update_alias(kms: Any, key: Built, world: World) -> Any:
    """Point an alias of an Enabled key at ``key`` (the destination: footnote [10])."""
    n = next(world.counter)
    source = world.kms.create_key()["KeyMetadata"]["KeyId"]
    world.kms.create_alias(AliasName=f"alias/key-state-moved-{n}", TargetKeyId=source)
    return kms.update_alias(AliasName=f"alias/key-state-moved-{n}", TargetKeyId=key.id)


def _listed(kms: Any, key: Built, world: World) -> None:
    ids = [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
    assert key.id in ids


def _retirable(kms: Any, key: Built, world: World) -> None:
    grants = kms.list_retirable_grants(RetiringPrincipal=key.retirer)["Grants"]
    assert key.grants["listed"] in [g["GrantId"] for g in grants]


OPERATIONS: dict[str, Call] = {
    "CancelKeyDeletion": lambda kms, key, w: kms.cancel_key_deletion(KeyId=key.id),
    "CreateAlias": lambda kms, key, w: kms.create_alias(
        AliasName=f"alias/key-state-new-{next(w.counter)}", TargetKeyId=key.id
    ),
    "CreateGrant": lambda kms, key, w: kms.create_grant(
        KeyId=key.id, GranteePrincipal=ROLE, Operations=["Decrypt"]
    ),
    "Decrypt": lambda kms, key, w: kms.decrypt(CiphertextBlob=key.ciphertext),
    "DeleteAlias": lambda kms, key, w: kms.delete_alias(AliasName=key.alias),
    "DeleteImportedKeyMaterial": lambda kms, key, w: kms.delete_imported_key_material(KeyId=key.id),
    "DescribeKey": lambda kms, key, w: kms.describe_key(KeyId=key.id),
    "DisableKey": lambda kms, key, w: kms.disable_key(KeyId=key.id),
    "DisableKeyRotation": lambda kms, key, w: kms.disable_key_rotation(KeyId=key.id),
    "EnableKey": lambda kms, key, w: kms.enable_key(KeyId=key.id),
    "EnableKeyRotation": lambda kms, key, w: kms.enable_key_rotation(KeyId=key.id),
    "Encrypt": lambda kms, key, w: kms.encrypt(KeyId=key.id, Plaintext=b"x"),
    "GenerateDataKey": lambda kms, key, w: kms.generate_data_key(KeyId=key.id, KeySpec="AES_256"),
    "GenerateDataKeyPair": lambda kms, key, w: kms.generate_data_key_pair(
        KeyId=key.id, KeyPairSpec="ECC_NIST_P256"
    ),
    "GenerateDataKeyPairWithoutPlaintext": (
        lambda kms, key, w: kms.generate_data_key_pair_without_plaintext(
            KeyId=key.id, KeyPairSpec="ECC_NIST_P256"
        )
    ),
    "GenerateDataKeyWithoutPlaintext": lambda kms, key, w: kms.generate_data_key_without_plaintext(
        KeyId=key.id, KeySpec="AES_256"
    ),
    "GetKeyPolicy": lambda kms, key, w: kms.get_key_policy(KeyId=key.id, PolicyName="default"),
    "GetKeyRotationStatus": lambda kms, key, w: kms.get_key_rotation_status(KeyId=key.id),
    "GetParametersForImport": lambda kms, key, w: kms.get_parameters_for_import(
        KeyId=key.id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    ),
    "GetPublicKey": lambda kms, key, w: kms.get_public_key(KeyId=key.id),
    "ImportKeyMaterial": _import,
    "ListAliases": lambda kms, key, w: kms.list_aliases(KeyId=key.id),
    "ListGrants": lambda kms, key, w: kms.list_grants(KeyId=key.id),
    "ListKeyPolicies": lambda kms, key, w: kms.list_key_policies(KeyId=key.id),
    "ListKeys": _listed,
    "ListResourceTags": lambda kms, key, w: kms.list_resource_tags(KeyId=key.id),
    "ListRetirableGrants": _retirable,
    "PutKeyPolicy": lambda kms, key, w: kms.put_key_policy(
        KeyId=key.id, PolicyName="default", Policy=key.policy
    ),
    "ReEncrypt": lambda kms, key, w: kms.re_encrypt(
        CiphertextBlob=key.ciphertext, DestinationKeyId=key.id
    ),
    "RetireGrant": lambda kms, key, w: kms.retire_grant(KeyId=key.id, GrantId=key.grants["retire"]),
    "RevokeGrant": lambda kms, key, w: kms.revoke_grant(KeyId=key.id, GrantId=key.grants["revoke"]),
    "ScheduleKeyDeletion": lambda kms, key, w: kms.schedule_key_deletion(
        KeyId=key.id, PendingWindowInDays=7
    ),
    "Sign": lambda kms, key, w: kms.sign(KeyId=key.id, Message=b"table", **SIGNING),
    "TagResource": lambda kms, key, w: kms.tag_resource(
        KeyId=key.id, Tags=[{"TagKey": "cell", "TagValue": "tagged"}]
    ),
    "UntagResource": lambda kms, key, w: kms.untag_resource(KeyId=key.id, TagKeys=["purpose"]),
    "UpdateAlias": _update_alias,
    "UpdateKeyDescription": lambda kms, key, w: kms.update_key_description(
        KeyId=key.id, Description="key-state table"
    ),
    "Verify": lambda kms, key, w: kms.verify(
        KeyId=key.id, Message=b"table", Signature=key.signature, **SIGNING
    ),
}


def outcome(call: Call, kms: Any, key: Built, world: World) -> str:
    """``ok``, or the error code the sandbox answered."""
    try:
        call(kms, key, world)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


def check(cell: Cell, kms: Any, world: World, *, fresh: bool = False) -> None:
    key = world.key(cell.state, cell.key_kind, fresh=fresh or cell.operation in MUTATING)
    got = outcome(OPERATIONS[cell.operation], kms, key, world)
    assert got == cell.outcome, (
        f"{cell.operation} on a {cell.state} key: the table says {cell.mark} "
        f"({cell.outcome}), the sandbox answered {got}"
    )
    if 12 in _footnotes(cell.mark):  # succeeds, but the key stays Unavailable
        assert kms.describe_key(KeyId=key.id)["KeyMetadata"]["KeyState"] == cell.state


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        yield World(sandbox)


def test_every_operation_has_a_call() -> None:
    assert set(OPERATIONS) == set(TABLE["operations"])


@pytest.mark.parametrize("cell", APPLICABLE, ids=lambda c: f"{c.operation}-{c.state}")
def test_cell(cell: Cell, world: World) -> None:
    check(cell, world.kms, world)


#: Cells played again through ``sandbox serve``: each gap the shim fills, and each column.
SERVED = [
    ("CreateAlias", "PendingDeletion"),
    ("CreateGrant", "Disabled"),
    ("Encrypt", "Disabled"),
    ("GenerateDataKeyPair", "Enabled"),
    ("GenerateDataKeyPairWithoutPlaintext", "PendingReplicaDeletion"),
    ("TagResource", "PendingDeletion"),
    ("UpdateKeyDescription", "PendingReplicaDeletion"),
    ("Decrypt", "PendingImport"),
    ("EnableKey", "Unavailable"),
    ("RevokeGrant", "Unavailable"),
]


def test_a_sample_through_sandbox_serve(world: World) -> None:
    import boto3

    server, endpoint = world.sandbox.serve()
    try:
        served = boto3.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=world.sandbox.region,
        ).client("kms", endpoint_url=endpoint)
        by_name = {(c.operation, c.state): c for c in APPLICABLE}
        for operation, state in SERVED:
            check(by_name[operation, state], served, world, fresh=True)
    finally:
        server.stop()
