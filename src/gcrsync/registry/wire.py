"""The bottom of the stack: one aiohttp session, the scheme and TLS policy, proxies, error translation.

Nothing above this module sees aiohttp's exception zoo: a request that gets no response raises
`Unreachable` (retryable), a policy refusal raises GcrsyncError before any connection is made.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from gcrsync.errors import GcrsyncError
from gcrsync.reference import is_loopback
from gcrsync.registry.options import TransportOptions
from gcrsync.registry.request import Request, Response, Unreachable, redact_url
from gcrsync.registry.tls import TlsContexts


class Wire:
    """Sends a request once, exactly as given: no redirects, no retries, no auth."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._tls = TlsContexts()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.options.connect_timeout, sock_read=self.options.read_timeout
            )
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=16, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                connector=connector,
                headers={"User-Agent": self.options.user_agent},
                auto_decompress=False,  # blob bytes must reach the hasher exactly as stored
                # Proxies from the environment are resolved here once per host (proxy_for), not by aiohttp:
                # its trust_env costs two thread hops per request and would also send ~/.netrc credentials.
                trust_env=False,
            )
        return self._session

    def scheme_for(self, host: str) -> str:
        """Plain HTTP only for loopback hosts (unless configured otherwise) or hosts configured plain_http."""
        plain = self.options.policy(host).plain_http
        return "http" if (is_loopback(host) if plain is None else plain) else "https"

    def proxy_for(self, url: URL) -> str | None:
        """--proxy, else HTTPS_PROXY/HTTP_PROXY honouring NO_PROXY; loopback is never proxied (as Go's
        ProxyFromEnvironment, which Docker and skopeo use). Cached per scheme and host."""
        key = (url.scheme, url.authority)
        if key not in self._proxies:
            host = url.host or ""
            proxy: str | None = None
            if not is_loopback(host):
                if self.options.proxy:
                    proxy = self.options.proxy
                elif not urllib.request.proxy_bypass(host):
                    proxy = urllib.request.getproxies_environment().get(url.scheme)
            self._proxies[key] = proxy
        return self._proxies[key]

    def check_scheme(self, url: URL) -> None:
        """Refuse, before connecting, what the policy forbids (plain HTTP to a remote host, odd schemes)."""
        host = url.host or ""
        if url.scheme == "http" and not (is_loopback(host) or self.options.policy(url.authority).plain_http):
            raise GcrsyncError(f"refusing plain HTTP to {url.authority}: set plain_http for it to allow it")
        if url.scheme not in ("http", "https"):
            raise GcrsyncError(f"unsupported URL scheme {url.scheme!r}")

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        url = request.url
        self.check_scheme(url)
        # Our own context for every https request (aiohttp's defaults trust nothing: gcrsync.registry.tls).
        ssl: Any = True
        if url.scheme == "https":
            ssl = self._tls.for_host(verify=not self.options.policy(url.authority).insecure)
        try:
            raw = await self.session.request(
                request.method, url, headers=dict(request.headers), data=request.body,
                allow_redirects=False, proxy=self.proxy_for(url), ssl=ssl,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{request.method} {redact_url(url)}: {_describe(exc)}",
                              reason=type(exc).__name__) from None
        try:
            yield Response(raw, request)
        finally:
            raw.release()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate verification failed (set `insecure: true` for this registry only if you trust it)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
