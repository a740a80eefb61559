"""TLS: with a certificate and key the gateway speaks DICOM over TLS only."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.dimse_gateway.conftest import Gateway, running_gateway
from tests.dimse_gateway.scu import associated


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .sign(key, hashes.SHA256()))
    certificate_path, key_path = folder / "gateway.pem", folder / "gateway.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path


@pytest.fixture(scope="module")
def tls_gateway(
    storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Path]]:
    """A gateway with TLS on; yields it and its certificate."""
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = self_signed(folder)
    with running_gateway(storage_env, folder, DICOMWEB_DIMSE_TLS_CERTIFICATE=str(certificate),
                         DICOMWEB_DIMSE_TLS_KEY=str(key)) as gateway:
        yield gateway, certificate


def test_c_echo_over_tls(tls_gateway: tuple[Gateway, Path]) -> None:
    gateway, certificate = tls_gateway
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate))
    with associated(gateway, tls_args=(context, "localhost")) as association:
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000


def test_a_peer_without_tls_gets_no_association(tls_gateway: tuple[Gateway, Path]) -> None:
    gateway, _ = tls_gateway
    with associated(gateway) as association:
        assert not association.is_established
