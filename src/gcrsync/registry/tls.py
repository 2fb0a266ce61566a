"""TLS for the wire: the client contexts gcrsync verifies with, and aiohttp imported without its own.

aiohttp builds two default SSL contexts when `aiohttp.connector` is first imported (on purpose, so that no
event loop blocks on disk I/O: aio-libs/aiohttp#9029), and each loads the system CA bundle: ~35 ms, a
sixth of a short run's start-up (bench/importtime.py). gcrsync never uses them: `Wire` hands every https
request a context from `TlsContexts`, built on the first https request, so a run that only speaks plain
HTTP to a loopback registry never reads the bundle. `import_aiohttp` therefore imports aiohttp with the
loading of default verify paths switched off for the duration of that import only. The two contexts
aiohttp keeps then trust no certificate authority: anything that reached them would fail verification,
never skip it (tests/test_transport.py checks both halves). The switch is process-wide while it lasts: a
program whose other thread builds a default context during that import gets one that trusts nothing, and
fails the same safe way. Where aiohttp was imported before gcrsync, nothing is switched.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any


def import_aiohttp() -> None:
    """Import aiohttp, skipping the CA loading of its unused import-time contexts (see the module doc)."""
    if "aiohttp" in sys.modules:
        return
    own = ssl.SSLContext.__dict__.get("set_default_verify_paths")  # normally inherited from _ssl._SSLContext
    ssl.SSLContext.set_default_verify_paths = _trust_nothing  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401
    finally:
        if own is None:
            del ssl.SSLContext.set_default_verify_paths
        else:
            ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


def _trust_nothing(self: Any) -> None:
    return None


class TlsContexts:
    """One verifying and one non-verifying client context per transport, each built when first needed."""

    def __init__(self) -> None:
        self._verifying: ssl.SSLContext | None = None
        self._trusting: ssl.SSLContext | None = None

    def for_host(self, *, verify: bool) -> ssl.SSLContext:
        if verify:
            if self._verifying is None:
                # The system's CA store (honouring SSL_CERT_FILE / SSL_CERT_DIR), as every Docker client does.
                self._verifying = ssl.create_default_context()
                self._verifying.set_alpn_protocols(["http/1.1"])
            return self._verifying
        if self._trusting is None:
            # `insecure: true` for this registry: encrypted, but its certificate is not checked.
            self._trusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._trusting.check_hostname = False
            self._trusting.verify_mode = ssl.CERT_NONE
            self._trusting.set_alpn_protocols(["http/1.1"])
        return self._trusting
