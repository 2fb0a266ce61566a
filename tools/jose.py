"""Minimal ES256 JOSE helpers for the test tools: libtrust "pretty" JWS (schema1) and compact JWTs.

Kept apart from imagefactory.py because it needs the third-party ``cryptography`` package, while the image
factory itself is standard-library only. Both uses here are tiny and fixed (one curve, one algorithm), so a
full JOSE library would add a dependency without removing any real complexity.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# The curve order of P-256; a derived private scalar must lie in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    """JOSE base64url: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_from_seed(seed: int) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from ``seed`` so that test fixtures are reproducible run to run."""
    scalar = int.from_bytes(hashlib.sha256(f"gcrsync-test-key:{seed}".encode()).digest(), "big")
    return ec.derive_private_key(scalar % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public JWK of ``key``. No ``kid``: libtrust rejects a kid that is not its own key-ID format."""
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def es256_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """JWS ES256 signature: raw r||s (32 bytes each), not the DER form ``cryptography`` returns."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], *, cert_der: bytes) -> str:
    """A compact ES256 JWT whose header carries ``x5c`` so distribution can chain it to its root bundle."""
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(cert_der).decode("ascii")]}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(es256_sign(key, signing_input.encode("ascii")))


def self_signed_cert(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
    """A long-lived self-signed CA certificate for ``key`` (the token registry's ``rootcertbundle``)."""
    import datetime

    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pretty_sign(
    payload: bytes, key: ec.EllipticCurvePrivateKey, *, time: str = "2024-01-01T00:00:00Z"
) -> bytes:
    """Sign ``payload`` (indented JSON object) the way libtrust's JSONSignature.PrettySignature does.

    libtrust cuts the payload just after its last value (``formatLength``), keeps the rest (``formatTail``,
    normally ``"\\n}"``) in the protected header, and splices a ``"signatures"`` array in between. A
    verifier rebuilds the payload as ``signed[:formatLength] + formatTail``; the signature covers
    ``protected + "." + base64url(payload)``.
    """
    close = len(payload.rstrip()) - 1
    if payload[close : close + 1] != b"}":
        raise ValueError("payload must be a JSON object")
    format_length = len(payload[:close].rstrip())
    protected_header = {
        "formatLength": format_length,
        "formatTail": b64url(payload[format_length:]),
        "time": time,
    }
    protected = b64url(json.dumps(protected_header).encode())
    signature = es256_sign(key, (protected + "." + b64url(payload)).encode("ascii"))
    signatures = [
        {
            "header": {"jwk": public_jwk(key), "alg": "ES256"},
            "signature": b64url(signature),
            "protected": protected,
        }
    ]
    # libtrust formats the array with json.MarshalIndent(sigs, indent, indent); only the bytes before
    # formatLength are signed, so this layout is cosmetic but matches what Docker produced.
    array = json.dumps(signatures, indent=3).replace("\n", "\n   ")
    return payload[:format_length] + b',\n   "signatures": ' + array.encode() + b"\n}"
