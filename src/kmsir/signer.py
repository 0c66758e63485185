"""Signing with a KMS asymmetric key: the detached signature of an export, and the journal
anchor of ``run --anchor-key``. What is signed is checked offline by ``signatures``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from kmsir.aws import ClientFactory, aws_errors
from kmsir.errors import UsageError
from kmsir.evidence.signatures import SIGNING_ALGORITHMS, public_key_pem

if TYPE_CHECKING:
    from mypy_boto3_kms.literals import SigningAlgorithmSpecType


@dataclass
class KmsSigner:
    """Signs sha256 digests with one KMS key (``SIGN_VERIFY``, RSA or ECC: the key specs of
    ``SIGNING_ALGORITHMS``, each with the algorithm KMS allows for it)."""

    clients: ClientFactory
    key: str
    _described: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def describe(self) -> dict[str, str]:
        """The key's ARN, the algorithm used and its public key (PEM); checked once."""
        if not self._described:
            kms = self.clients.client("kms")
            with aws_errors(f"DescribeKey on {self.key}"):
                metadata = kms.describe_key(KeyId=self.key)["KeyMetadata"]
            spec, usage = metadata.get("KeySpec"), metadata.get("KeyUsage")
            algorithm = SIGNING_ALGORITHMS.get(str(spec))
            if usage != "SIGN_VERIFY" or algorithm is None:
                raise UsageError(
                    f"{self.key}: not a key kmsir signs with (it is {spec}, {usage}); use a "
                    f"SIGN_VERIFY key of spec {', '.join(SIGNING_ALGORITHMS)}"
                )
            with aws_errors(f"GetPublicKey on {self.key}"):
                public = kms.get_public_key(KeyId=metadata["KeyId"])["PublicKey"]
            self._described.update(
                key_arn=str(metadata["Arn"]),
                algorithm=algorithm,
                public_key_pem=public_key_pem(public),
            )
        return self._described

    def sign(self, digest: str) -> bytes:
        """The signature over a hex sha256 ``digest`` (sent as the raw 32-byte message)."""
        described = self.describe()
        with aws_errors(f"Sign with {described['key_arn']}"):
            signature: bytes = self.clients.client("kms").sign(
                KeyId=described["key_arn"],
                Message=bytes.fromhex(digest),
                MessageType="RAW",
                SigningAlgorithm=cast("SigningAlgorithmSpecType", described["algorithm"]),
            )["Signature"]
        return signature
