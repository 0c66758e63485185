"""The keys of a scenario: frozen pydantic records of a key to create, the key material
imported into it, and the custom key stores keys may live in.

A key is KMS's own (origin ``AWS_KMS``), or holds key material the scenario imports
(``origin: EXTERNAL`` with ``material:``, a file of 32 bytes beside the scenario), or lives in
one of the scenario's ``key_stores`` (``store: NAME``: a CloudHSM or external key store, its
origin ``AWS_CLOUDHSM`` or ``EXTERNAL_KEY_STORE``). Each record checks what AWS would refuse
of it on its own (rotation of imported material, a multi-Region key in a key store...);
``scenario_model.Scenario`` checks the references between records.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from kmsir.keymaterial import MAX_VALID_DAYS
from kmsir.playbook import yamlsafe
from kmsir.playbook.values import duration_seconds, is_region


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _region_name(value: str) -> str:
    if not is_region(value):
        raise ValueError(f"{yamlsafe.shorten(value)} is not an AWS Region name like us-east-1")
    return value


def relative_file(value: str) -> str:
    """A file named relative to the scenario file (never absolute: a scenario moved with its
    files still finds them)."""
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
        raise ValueError(f"{yamlsafe.shorten(value)}: name the file relative to the scenario file")
    return value


#: Key specs a scenario may create, with the key usages AWS allows each (the first: the
#: default). SM2 is offered in China Regions only; ML-DSA, moto cannot create.
KEY_USAGES: dict[str, tuple[str, ...]] = {
    "SYMMETRIC_DEFAULT": ("ENCRYPT_DECRYPT",),
    **{f"RSA_{bits}": ("ENCRYPT_DECRYPT", "SIGN_VERIFY") for bits in (2048, 3072, 4096)},
    **{spec: ("SIGN_VERIFY",) for spec in ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521")},
    "ECC_SECG_P256K1": ("SIGN_VERIFY",),
    **{f"HMAC_{bits}": ("GENERATE_VERIFY_MAC",) for bits in (224, 256, 384, 512)},
}
KeySpecName = Literal[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
]


class MaterialSpec(_Model):
    """Key material imported into an ``EXTERNAL`` key when the scenario starts
    (GetParametersForImport, the material wrapped with the public key it returns,
    ImportKeyMaterial).

    ``file``: the 32 bytes of material, relative to the scenario file (the escrow copy a
    responder re-imports from). ``valid_to``: how long from the scenario's start the material
    stays valid (``20d``; none: it does not expire). ``deleted``: the material was imported,
    then deleted (DeleteImportedKeyMaterial): the key is PendingImport.
    """

    file: Annotated[str, AfterValidator(relative_file)] = Field(min_length=1, max_length=500)
    valid_to: str | None = None
    deleted: bool = False

    @field_validator("valid_to")
    @classmethod
    def _ahead(cls, value: str | None) -> str | None:
        # AWS refuses a ValidTo in the past (an expired material is `deleted: true`) or more
        # than 365 days after the import
        if value is None:
            return value
        ahead = duration_seconds(value.removeprefix("+"))
        if ahead <= 0:
            raise ValueError(f"valid_to {value}: the material must stay valid for a while")
        if ahead > MAX_VALID_DAYS * 86400:
            raise ValueError(f"valid_to {value}: AWS accepts at most {MAX_VALID_DAYS} days")
        return value


class KeyStoreSpec(_Model):
    """A custom key store (CreateCustomKeyStore, then ConnectCustomKeyStore): a CloudHSM key
    store or an external key store (XKS). Its keys are created while it is connected; one
    that is not ``connected`` is disconnected once they exist, which leaves each of them
    Unavailable."""

    type: Literal["CLOUDHSM", "EXTERNAL"]
    connected: bool = True
    #: The store's name (CustomKeyStoreName; default: the scenario's name for it).
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/=+@-]{1,256}$")

    @property
    def store_type(self) -> str:
        """The CustomKeyStoreType AWS reports."""
        return "AWS_CLOUDHSM" if self.type == "CLOUDHSM" else "EXTERNAL_KEY_STORE"

    @property
    def origin(self) -> str:
        """The Origin of a key created in the store."""
        return "AWS_CLOUDHSM" if self.type == "CLOUDHSM" else "EXTERNAL_KEY_STORE"


class KeySpec(_Model):
    """A customer-managed key to create."""

    description: str = ""
    alias: str | None = Field(default=None, pattern=r"^alias/[A-Za-z0-9/_-]{1,250}$")
    tags: dict[str, str] = Field(default_factory=dict)
    rotation: bool = False
    #: The rotation period (EnableKeyRotation's RotationPeriodInDays, 90-2560; default: AWS's
    #: 365 days).
    rotation_period_days: int | None = Field(default=None, ge=90, le=2560)
    #: The key spec (CreateKey's KeySpec) and usage (default: the spec's first in
    #: ``KEY_USAGES``): an asymmetric or HMAC key, which cannot rotate automatically.
    spec: KeySpecName = "SYMMETRIC_DEFAULT"
    usage: Literal["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC"] | None = None
    #: Where the key material comes from: KMS, or imported (``EXTERNAL``: CreateKey with
    #: Origin EXTERNAL; PendingImport until ``material`` is imported).
    origin: Literal["AWS_KMS", "EXTERNAL"] = "AWS_KMS"
    #: The material imported into an EXTERNAL key (none: never imported, PendingImport).
    material: MaterialSpec | None = None
    #: The scenario's key store the key lives in (its origin then is the store's).
    store: str | None = None
    enabled: bool = True
    #: Scheduled for deletion when the scenario starts, with this waiting period (7-30 days).
    pending_deletion_days: int | None = Field(default=None, ge=7, le=30)
    #: The key policy at the start (a template over the world, like the history); default:
    #: AWS's default policy.
    policy: dict[str, Any] | None = None
    #: A multi-Region primary key (CreateKey with MultiRegion; its id starts ``mrk-``).
    multi_region: bool = False
    #: Regions to replicate the multi-Region key into (ReplicateKey, once the key exists, its
    #: alias and rotation set): each replica has the same key id, its own ARN, the default key
    #: policy, no alias, no grant, and is Enabled.
    replicas: list[Annotated[str, AfterValidator(_region_name)]] = Field(
        default_factory=list, max_length=30
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without the multi-Region fields when unused: the fingerprint of a scenario that has
        none stays what it was before they existed (a recorded sandbox run still resumes)."""
        data: dict[str, Any] = handler(self)
        if not self.multi_region and not self.replicas:
            del data["multi_region"], data["replicas"]
        # so are the spec, usage, origin, rotation period, material and store (added since)
        defaults = {
            "rotation_period_days": None,
            "spec": "SYMMETRIC_DEFAULT",
            "usage": None,
            "origin": "AWS_KMS",
            "material": None,
            "store": None,
        }
        return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}

    @model_validator(mode="after")
    def _fits(self) -> KeySpec:
        usages = KEY_USAGES[self.spec]
        if self.usage is not None and self.usage not in usages:
            raise ValueError(f"usage {self.usage}: a {self.spec} key is for {' or '.join(usages)}")
        if self.rotation_period_days is not None and not self.rotation:
            raise ValueError("rotation_period_days needs rotation: true")
        if self.rotation and (
            self.spec != "SYMMETRIC_DEFAULT" or self.origin != "AWS_KMS" or self.store
        ):
            raise ValueError(
                "rotation: AWS rotates only symmetric encryption keys with key material "
                "from KMS (rotate the others manually)"
            )
        if self.material is not None and self.origin != "EXTERNAL":
            raise ValueError("material: only a key with origin: EXTERNAL has imported material")
        if self.material is not None and self.spec != "SYMMETRIC_DEFAULT":
            raise ValueError("material: the sandbox imports symmetric key material only")
        if self.origin == "EXTERNAL" and self.material is None and not self.enabled:
            raise ValueError(
                "enabled: false: a key never given material is PendingImport, which AWS "
                "does not disable (give it material, or leave enabled out)"
            )
        if self.store is not None:
            if self.origin != "AWS_KMS":
                raise ValueError(
                    "store: a key in a key store takes its origin from the store "
                    "(AWS_CLOUDHSM or EXTERNAL_KEY_STORE): leave origin out"
                )
            if self.spec != "SYMMETRIC_DEFAULT" or self.multi_region:
                raise ValueError(
                    "store: a custom key store holds only single-Region symmetric encryption keys"
                )
        return self

    @property
    def key_usage(self) -> str:
        """The key usage CreateKey is given."""
        return self.usage or KEY_USAGES[self.spec][0]
