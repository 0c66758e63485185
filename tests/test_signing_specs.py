"""Signing with every asymmetric key spec KMS offers for signing (``export --sign-key``, and
the journal anchor of ``run --anchor-key``), each checked offline with the key given.

Which algorithm a key spec signs with is AWS's table, not kmsir's choice: AWS KMS Developer
Guide, "Asymmetric key specs"
(https://docs.aws.amazon.com/kms/latest/developerguide/asymmetric-key-specs.html). RSA key
specs sign with RSASSA-PSS or PKCS #1 v1.5 and SHA-256/384/512 (kmsir uses RSASSA_PSS_SHA_256
for every size); an ECC key signs with one algorithm only, its curve's: ECC_NIST_P256 and
ECC_SECG_P256K1 with ECDSA_SHA_256, ECC_NIST_P384 with ECDSA_SHA_384, ECC_NIST_P521 with
ECDSA_SHA_512 (KMS refuses ECDSA_SHA_256 for P-384 and P-521 keys, as moto does).

KMS offers more signing key specs than these seven, which kmsir does not sign with and the
sandbox cannot hold: ECC_NIST_EDWARDS25519 (ED25519_SHA_512 / ED25519_PH_SHA_512) and
ML_DSA_44/65/87 (ML_DSA_SHAKE_256) — moto 5.2 refuses to create them (its KeySpec enum lacks
them), so no signature of theirs can be made or checked here; and SM2 (China Regions only),
which moto creates but backs with an RSA key. ``test_specs_the_sandbox_cannot_hold`` and
``test_a_key_kmsir_does_not_sign_with_is_refused`` pin both facts down.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kmsir.aws import ClientFactory
from kmsir.errors import UsageError
from kmsir.evidence.signatures import SIGNING_ALGORITHMS, anchor_digest, check_signature
from kmsir.signer import KmsSigner

from .clikit import cli
from .netguard import NetGuard

REGION = "eu-west-1"
#: The table of the AWS page above: the algorithm each signing key spec signs with.
DOCUMENTED = {
    "RSA_2048": "RSASSA_PSS_SHA_256",
    "RSA_3072": "RSASSA_PSS_SHA_256",
    "RSA_4096": "RSASSA_PSS_SHA_256",
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
}
#: Signing key specs KMS offers (botocore's KeySpec model) that moto 5.2 cannot create.
NOT_IN_THE_SANDBOX = ("ECC_NIST_EDWARDS25519", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87")


def test_kmsir_signs_each_spec_with_the_documented_algorithm() -> None:
    assert SIGNING_ALGORITHMS == DOCUMENTED


@pytest.mark.parametrize("spec", sorted(DOCUMENTED))
def test_an_export_and_an_anchor_signed_with_each_spec_verify_offline(
    spec: str, demo_bundle: Path, tmp_path: Path, net: NetGuard
) -> None:
    from moto import mock_aws

    archive = tmp_path / "evidence.tar.gz"
    with mock_aws():
        import boto3

        kms = boto3.client("kms", region_name=REGION)
        key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        exported = cli(
            "export", demo_bundle, "--out", archive, "--sign-key", key["Arn"], "--region", REGION
        )
        # the public key as the person checking gets it: aws kms get-public-key
        (tmp_path / "key.der").write_bytes(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
        signer = KmsSigner(ClientFactory(session_factory=boto3.Session, region=REGION), key["Arn"])
        digest = anchor_digest("run-1", 7, "0" * 64)
        anchor = {"sha256": digest, "signature": base64.b64encode(signer.sign(digest)).decode()}
        pem = signer.describe()["public_key_pem"]
    assert exported.exit_code == 0, exported.output
    record = json.loads((tmp_path / "evidence.tar.gz.sig.json").read_text())
    assert record["algorithm"] == DOCUMENTED[spec]
    # offline: no AWS, no network; the key given on the command line
    verified = cli("verify", archive, "--key", tmp_path / "key.der")
    assert verified.exit_code == 0, verified.output
    assert f"signature: valid ({key['Arn']}, public key sha256:" in verified.stdout
    # the anchor is checked as verify checks anchor.json: the key from the journal, no record
    # of the algorithm, so the key's spec alone must pick the hash
    assert check_signature(anchor, digest, public_key_pem=pem) is None
    assert net.refused == []


@pytest.mark.parametrize(
    ("curve", "hashed", "algorithm"),
    [("SECP384R1", "SHA384", "ECDSA_SHA_384"), ("SECP521R1", "SHA512", "ECDSA_SHA_512")],
)
def test_a_p384_or_p521_signature_is_checked_with_its_curve_s_hash(
    curve: str, hashed: str, algorithm: str
) -> None:
    """What KMS makes for these keys verifies; what kmsir asked for before (ECDSA over
    SHA-256, which KMS refuses for them) does not."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(getattr(ec, curve)())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    digest = "ab" * 32

    def record(hash_: Any, named: str | None = None) -> dict[str, str]:
        signature = private.sign(bytes.fromhex(digest), ec.ECDSA(hash_))
        found = {"sha256": digest, "signature": base64.b64encode(signature).decode()}
        return found | ({"algorithm": named} if named else {})

    assert check_signature(record(getattr(hashes, hashed)(), algorithm), digest, pem) is None
    assert check_signature(record(getattr(hashes, hashed)()), digest, pem) is None
    assert check_signature(record(hashes.SHA256()), digest, pem) == "the signature does not verify"
    assert check_signature(record(getattr(hashes, hashed)(), "ECDSA_SHA_256"), digest, pem) == (
        f"the signature names another algorithm than this key signs with ({algorithm})"
    )


@pytest.mark.parametrize("spec", NOT_IN_THE_SANDBOX)
def test_specs_the_sandbox_cannot_hold(spec: str) -> None:
    """KMS offers these signing key specs, moto 5.2 refuses to create them: nothing signed
    with them can be tested here, and kmsir does not sign with them. When moto learns one,
    this fails: add the spec to kmsir's table and to ``DOCUMENTED``, with its algorithm."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    assert (
        spec in boto3.client("kms", region_name=REGION).meta.service_model.shape_for("KeySpec").enum
    )  # AWS offers it
    with mock_aws(), pytest.raises(ClientError, match="ValidationException"):
        boto3.client("kms", region_name=REGION).create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")
    assert spec not in SIGNING_ALGORITHMS


@pytest.mark.parametrize(
    ("spec", "usage"), [("SM2", "SIGN_VERIFY"), ("RSA_2048", "ENCRYPT_DECRYPT")]
)
def test_a_key_kmsir_does_not_sign_with_is_refused(
    moto_clients: ClientFactory, spec: str, usage: str
) -> None:
    """SM2 (China Regions only; moto backs it with an RSA key, so no real SM2DSA signature
    can be made here) and a key for encryption are refused before KMS is asked to sign."""
    kms = moto_clients.client("kms")
    arn = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"]  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=rf"not a key kmsir signs with \(it is {spec}, {usage}\)"):
        KmsSigner(moto_clients, arn).describe()


def test_a_der_key_ending_in_a_whitespace_byte_is_still_a_key() -> None:
    """A DER public key ends with a byte of the key itself: 1 key in 40 or so ends with one
    that ``bytes.strip()`` removes (0x09-0x0d, 0x20), which made ``verify --key key.der``
    refuse a good key now and then."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from kmsir.evidence.signatures import trusted_key

    while True:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if der[-1:].isspace():
            break
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert trusted_key(der) == pem
