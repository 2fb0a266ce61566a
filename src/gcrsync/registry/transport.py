"""The transport stack: the one way gcrsync speaks HTTP, built from small layers with one concern each.

    RegistryClient.send(request)       every verb: manifests, blobs, tags, catalog, uploads, mounts,
      │                                deletes, the web APIs of discovery, the /v2/ ping
      ├─ Resuming        resume.py     a body that breaks off is fetched again / continued with Range
      ├─ Redirecting     redirects.py  GET/HEAD redirects; scopes and Authorization stay on their origin
      ├─ Authenticating  auth.py       the host's challenge → Basic or a Bearer token cached per scope set
      └─ Transport.send  (this module; token requests of the auth layer enter here)
          ├─ Retrying    retry.py      transient statuses and failures, Retry-After, backoff, caps
          ├─ HostLimits  hostlimits.py concurrency cap (never waited on by a nested same-host request),
          │                            pacing, slowing down when a RateLimit budget runs low
          ├─ Counting    stats.py      request counts per "METHOD host", the debug log line
          └─ Wire        wire.py       one aiohttp session, scheme/TLS/proxy policy, error translation

Modelled on go-containerregistry's pkg/v1/remote/transport (one RoundTripper per concern).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gcrsync.registry.hostlimits import HostLimits
from gcrsync.registry.options import HostPolicy, TransportOptions
from gcrsync.registry.request import Request, Response, redact_url
from gcrsync.registry.retry import RETRY_STATUSES, Retrying
from gcrsync.registry.stats import Counting, TransportStats
from gcrsync.registry.wire import Wire

__all__ = ["RETRY_STATUSES", "HostPolicy", "Transport", "TransportOptions", "TransportStats", "redact_url"]


class Transport:
    """The network half of the stack for all registries and listing APIs of one run (one aiohttp session)."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self.stats = TransportStats()
        self._wire = Wire(self.options)
        self._stack = Retrying(HostLimits(Counting(self._wire, self.stats), self.options, self.stats),
                               self.options, self.stats)

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._wire.close()

    def scheme_for(self, host: str) -> str:
        """Plain HTTP only for loopback hosts (unless configured otherwise) or hosts configured plain_http."""
        return self._wire.scheme_for(host)

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        """Send one request with retries and per-host limits; no auth, no redirects (see RegistryClient)."""
        async with self._stack.send(request) as resp:
            yield resp
