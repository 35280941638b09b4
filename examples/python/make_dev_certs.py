"""Writes a throwaway CA and a server certificate for trying Rookery with TLS on this machine.

    python examples/python/make_dev_certs.py DIR

DIR gets ca.crt (the CA that clients trust), server.crt (the server's chain, leaf first) and
server.key (its private key, PKCS#8 PEM, readable by the owner only): what the server's
[tls] cert_file and key_file name. The server certificate is for DNS name localhost and IP
127.0.0.1 and lasts a day; the CA's private key is never written, so nothing more can be
signed with it. For local development and scripts/examples.sh only: use your own PKI (or
cert-manager) anywhere else. Needs the `cryptography` package.
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)
# Clock skew between the machine that signs and the ones that verify.
BACKDATE = datetime.timedelta(minutes=5)


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(subject, subject_key, issuer, issuer_key, extensions):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("Rookery throwaway development CA")
    ca = certificate(
        ca_name,
        ca_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
        ],
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        name("localhost"),
        server_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            ),
        ],
    )

    pem = serialization.Encoding.PEM
    write(os.path.join(directory, "ca.crt"), ca.public_bytes(pem))
    write(os.path.join(directory, "server.crt"), server.public_bytes(pem))
    write(
        os.path.join(directory, "server.key"),
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        mode=0o600,
    )
    print(f"wrote ca.crt, server.crt and server.key to {directory}", file=sys.stderr)


if __name__ == "__main__":
    main()
