"""Transport policy: who may be spoken to over plain HTTP, TLS verification on by default, redaction."""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from gcrsync.errors import GcrsyncError, RegistryError
from gcrsync.registry.request import Request
from gcrsync.registry.transport import HostPolicy, Transport, TransportOptions, redact_url
from gcrsync.registry.wire import Wire


@pytest.mark.parametrize(("host", "scheme"), [
    ("localhost:5000", "http"), ("127.0.0.1:5000", "http"), ("127.8.9.10", "http"), ("[::1]:5000", "http"),
    ("gcr.io", "https"), ("registry.example.com:5000", "https"), ("10.0.0.5:5000", "https"),
    ("localhost.evil.example", "https"),
])
def test_plain_http_only_for_loopback(host: str, scheme: str) -> None:
    assert Transport().scheme_for(host) == scheme


def test_plain_http_and_https_can_be_configured_per_host() -> None:
    options = TransportOptions(host_policies={"reg.internal:5000": HostPolicy(plain_http=True),
                                              "127.0.0.1:8443": HostPolicy(plain_http=False)})
    transport = Transport(options)
    assert transport.scheme_for("reg.internal:5000") == "http"
    assert transport.scheme_for("127.0.0.1:8443") == "https"


async def test_plain_http_to_a_remote_host_is_refused_before_connecting() -> None:
    async with Transport() as transport:
        with pytest.raises(GcrsyncError, match="refusing plain HTTP"):
            async with transport.send(Request("GET", URL("http://registry.example.com/v2/"))):
                pass
        assert transport.stats.total_requests == 0


def _self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[str]:
    async def v2(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_self_signed(tmp_path))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_tls_verification_is_on_by_default(tls_server: str) -> None:
    options = TransportOptions(max_attempts=1, host_policies={tls_server: HostPolicy(plain_http=False)})
    async with Transport(options) as transport:
        assert transport.scheme_for(tls_server) == "https"
        with pytest.raises(RegistryError, match="TLS certificate verification failed"):
            async with transport.send(Request("GET", URL(f"https://{tls_server}/v2/"))):
                pass


async def test_insecure_skips_verification_for_that_host_only(tls_server: str) -> None:
    options = TransportOptions(max_attempts=1,
                               host_policies={tls_server: HostPolicy(plain_http=False, insecure=True)})
    request = Request("GET", URL(f"https://{tls_server}/v2/"))
    async with Transport(options) as transport, transport.send(request) as resp:
        assert resp.status == 200


async def test_verification_reads_the_trust_store_when_first_needed(
        tls_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's certificate becomes trusted after this process imported aiohttp: only a context built
    # by the transport itself (gcrsync.registry.tls), not aiohttp's import-time default, can verify it.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    options = TransportOptions(max_attempts=1, host_policies={tls_server: HostPolicy(plain_http=False)})
    request = Request("GET", URL(f"https://{tls_server}/v2/"))
    async with Transport(options) as transport, transport.send(request) as resp:
        assert resp.status == 200


def test_aiohttp_import_skips_its_unused_ca_loading_and_fails_closed() -> None:
    # A fresh interpreter, imported as the command line does: aiohttp's own default contexts trust no CA
    # (so they could never skip a check), they still demand verification, and ssl is left as it was.
    probe = (
        "import ssl, json, gcrsync.cli, gcrsync.registry.wire, aiohttp.connector as c;"
        "v = c._SSL_CONTEXT_VERIFIED;"
        "print(json.dumps([v.cert_store_stats()['x509_ca'], v.verify_mode == ssl.CERT_REQUIRED,"
        " 'set_default_verify_paths' in ssl.SSLContext.__dict__,"
        " ssl.create_default_context().cert_store_stats() == ssl.create_default_context().cert_store_stats()]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [0, True, False, True]


def test_redact_url_strips_userinfo_and_signed_parameters() -> None:
    text = redact_url("https://user:s3cret@cdn.example/blob?X-Amz-Signature=abc&ok=1&token=t0k&_state=zzz")
    assert "s3cret" not in text and "abc" not in text and "t0k" not in text and "zzz" not in text
    assert "ok=1" in text and "cdn.example/blob" in text


@pytest.mark.parametrize("query", [
    "X-Goog-Signature=SECRET1&X-Goog-Credential=SECRET2",  # GCS V4 signed URL
    "GoogleAccessId=SECRET1&Signature=SECRET2",  # GCS V2
    "X-Amz-Signature=SECRET1&X-Amz-Credential=SECRET2&X-Amz-Security-Token=SECRET3",  # S3
    "Policy=SECRET1&Signature=SECRET2&Key-Pair-Id=SECRET3",  # CloudFront
    "sv=2021&sig=SECRET1",  # Azure SAS
    "hdnts=SECRET1&__token__=SECRET2",  # Akamai
])
def test_redact_url_covers_the_signed_urls_of_major_cdns(query: str) -> None:
    text = redact_url(f"https://cdn.example/blob?{query}&keep=yes")
    assert "SECRET" not in text and "keep=yes" in text


def test_proxy_from_environment_with_no_proxy_and_never_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "registry.internal,.corp.example")
    transport = Wire(TransportOptions())
    assert transport.proxy_for(URL("https://gcr.io/v2/")) == "http://proxy.internal:3128"
    assert transport.proxy_for(URL("https://registry.internal/v2/")) is None
    assert transport.proxy_for(URL("https://mirror.corp.example/v2/")) is None
    assert transport.proxy_for(URL("http://127.0.0.1:5000/v2/")) is None
    explicit = Wire(TransportOptions(proxy="http://other:8080"))
    assert explicit.proxy_for(URL("https://registry.internal/v2/")) == "http://other:8080"
    assert explicit.proxy_for(URL("http://localhost:5000/v2/")) is None


def test_every_error_of_a_registry_answer_is_shown() -> None:
    from gcrsync.registry.errors import registry_error

    body = json.dumps({"errors": [
        {"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"},
        {"code": "MANIFEST_BLOB_UNKNOWN", "message": "manifest blob unknown", "detail": "sha256:abc"},
    ]}).encode()
    error = registry_error("PUT manifest r:v1", 400, body)
    assert error.code == "DIGEST_INVALID"
    assert str(error) == ("PUT manifest r:v1: DIGEST_INVALID: provided digest did not match uploaded content; "
                          "MANIFEST_BLOB_UNKNOWN: manifest blob unknown")
