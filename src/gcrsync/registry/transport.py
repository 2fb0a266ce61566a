"""The one place gcrsync speaks HTTP: an aiohttp session with retries, rate limits and redaction.

Everything above this module asks for a request and gets a response or a RegistryError; it never sees
aiohttp's exception zoo, and it never has to think about 429s, Retry-After, flaky connections or
which host may be spoken to over plain HTTP.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from gcrsync.errors import GcrsyncError, RegistryError
from gcrsync.reference import is_loopback

log = logging.getLogger("gcrsync.http")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDACT_QUERY = re.compile(r"(?i)([?&](?:access_token|token|password|secret|sig|signature|_state|x-amz-[a-z-]+)=)[^&]*")


def redact_url(url: str | URL) -> str:
    """A URL safe to log: no userinfo, no token-like query parameters (CDN redirects carry signatures)."""
    text = str(URL(str(url)).with_user(None)) if isinstance(url, str | URL) else str(url)
    return _REDACT_QUERY.sub(r"\1REDACTED", text)


@dataclass
class HostPolicy:
    """Per-host knobs from the config (insecure hosts, rate and concurrency caps)."""

    insecure: bool = False  # HTTPS without certificate verification (a self-signed registry)
    plain_http: bool | None = None  # speak HTTP; None = only for loopback hosts, as Docker does
    requests_per_second: float | None = None
    max_concurrency: int | None = None


@dataclass
class TransportOptions:
    connect_timeout: float = 10.0  # the original tool's --httptimeout
    read_timeout: float = 60.0  # idle gap between two reads; a blob still making progress never times out
    proxy: str | None = None
    max_attempts: int = 6
    max_retry_wait: float = 60.0  # cap on one Retry-After / backoff sleep
    max_total_wait: float = 300.0  # cap on all sleeping for one request
    backoff_base: float = 0.5
    low_budget: int = 5  # RateLimit-Remaining at or below this → slow down
    host_policies: dict[str, HostPolicy] = field(default_factory=dict)
    user_agent: str = "gcrsync"

    def policy(self, host: str) -> HostPolicy:
        return self.host_policies.get(host, HostPolicy())


@dataclass
class TransportStats:
    """Counters for reports, tests and the benchmark."""

    requests: Counter[str] = field(default_factory=Counter)  # by "METHOD host"
    retries: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)
    waited_seconds: float = 0.0
    rate_limit_slowdowns: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class _HostGate:
    """Concurrency cap, request pacing and rate-limit budget for one host."""

    def __init__(self, policy: HostPolicy) -> None:
        self.semaphore = asyncio.Semaphore(policy.max_concurrency) if policy.max_concurrency else None
        self.interval = 1.0 / policy.requests_per_second if policy.requests_per_second else 0.0
        self.next_slot = 0.0
        self.paused_until = 0.0
        self.lock = asyncio.Lock()

    async def wait_turn(self, stats: TransportStats) -> None:
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next_slot, self.paused_until)
            self.next_slot = start + self.interval
        if start > now:
            stats.waited_seconds += start - now
            await asyncio.sleep(start - now)


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() is also true for "²", which float() refuses
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError):  # AttributeError: None (py<3.10)
        return None
    return max(0.0, min(seconds, cap))


def parse_rate_limit(headers: Mapping[str, str]) -> tuple[int | None, float | None]:
    """(remaining, window seconds) from Docker Hub's `RateLimit-Remaining: 76;w=21600` or GitHub-style
    `x-ratelimit-remaining` / `x-ratelimit-reset` headers."""
    for name in ("ratelimit-remaining", "x-ratelimit-remaining"):
        raw = headers.get(name)
        if raw is None:
            continue
        m = re.match(r"\s*([0-9]{1,18})(?:\s*;\s*w=([0-9]{1,18}))?(?![0-9])", raw)  # int() refuses 4300+ digits
        if not m:
            return None, None
        window = float(m.group(2)) if m.group(2) else None
        if window is None:
            reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
            if reset and reset.strip().isascii() and reset.strip().isdigit():
                val = float(reset)
                window = max(0.0, val - time.time()) if val > 1e9 else val
        return int(m.group(1)), window
    return None, None


class Transport:
    """An aiohttp session for all registries and listing APIs of one run."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self.stats = TransportStats()
        self._session: aiohttp.ClientSession | None = None
        self._gates: dict[str, _HostGate] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
                # Proxies from the environment are resolved here once per host (_proxy_for), not by aiohttp:
                # its trust_env costs two thread hops per request and would also send ~/.netrc credentials.
                trust_env=False,
            )
        return self._session

    def scheme_for(self, host: str) -> str:
        """Plain HTTP only for loopback hosts (unless configured otherwise) or hosts configured plain_http."""
        plain = self.options.policy(host).plain_http
        return "http" if (is_loopback(host) if plain is None else plain) else "https"

    def _proxy_for(self, url: URL) -> str | None:
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

    def _gate(self, host: str) -> _HostGate:
        gate = self._gates.get(host)
        if gate is None:
            gate = self._gates[host] = _HostGate(self.options.policy(host))
        return gate

    def _check_scheme(self, url: URL) -> None:
        host = url.host or ""
        if url.scheme == "http" and not (is_loopback(host) or self.options.policy(url.authority).plain_http):
            raise GcrsyncError(f"refusing plain HTTP to {url.authority}: set plain_http for it to allow it")
        if url.scheme not in ("http", "https"):
            raise GcrsyncError(f"unsupported URL scheme {url.scheme!r}")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.max_retry_wait, self.options.backoff_base * 2.0**attempt)
        return float(ceiling * random.uniform(0.5, 1.0))

    def _note_rate_limit(self, host: str, headers: Mapping[str, str]) -> None:
        remaining, window = parse_rate_limit(headers)
        if remaining is None or remaining > self.options.low_budget:
            return
        # Spread the remaining budget over the window instead of running into 429s (regsync/ocync idea);
        # with nothing left, pause the host until a slot is likely to free up.
        gate = self._gate(host)
        window = window or 60.0
        pause = min(self.options.max_retry_wait, window / max(remaining, 1) if remaining else window)
        gate.paused_until = max(gate.paused_until, time.monotonic() + pause)
        self.stats.rate_limit_slowdowns += 1
        log.warning("rate limit budget low at %s (%d left): slowing down %.1fs", host, remaining, pause)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | AsyncIterable[bytes] | None = None,
        retry: bool = True,
        ok: tuple[int, ...] = (),
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request, retrying transient failures when the body can be replayed.

        Redirects are not followed here (the registry client does that, to strip credentials across hosts).
        Statuses in `ok` and any non-retryable status are handed to the caller; a retryable status that
        persists after the last attempt is handed over too, so the caller can turn it into a clear error.
        """
        target = URL(str(url), encoded=isinstance(url, URL))
        self._check_scheme(target)
        host = target.authority
        policy = self.options.policy(host)
        gate = self._gate(host)
        replayable = data is None or isinstance(data, bytes)
        attempts = self.options.max_attempts if (retry and replayable) else 1
        waited = 0.0
        ssl: Any = not policy.insecure
        for attempt in range(attempts):
            last = attempt == attempts - 1
            await gate.wait_turn(self.stats)
            if gate.semaphore is not None:
                await gate.semaphore.acquire()
            try:
                self.stats.requests[f"{method} {host}"] += 1
                try:
                    resp = await self.session.request(
                        method,
                        target,
                        headers=dict(headers or {}),
                        data=data,
                        allow_redirects=False,
                        proxy=self._proxy_for(target),
                        ssl=ssl,
                    )
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    reason = type(exc).__name__
                    if last:
                        raise RegistryError(f"{method} {redact_url(target)}: {_describe(exc)}") from None
                    delay = self._backoff(attempt)
                else:
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s %s → %d", method, redact_url(target), resp.status)
                    self._note_rate_limit(host, resp.headers)
                    if resp.status not in RETRY_STATUSES or resp.status in ok or last:
                        try:
                            yield resp
                        finally:
                            resp.release()
                        return
                    reason = str(resp.status)
                    after = parse_retry_after(resp.headers.get("Retry-After"), self.options.max_retry_wait)
                    delay = after if after is not None else self._backoff(attempt)
                    if resp.status == 429 and after is None:
                        delay = max(delay, 1.0)
                    resp.release()
            finally:
                if gate.semaphore is not None:
                    gate.semaphore.release()
            if waited + delay > self.options.max_total_wait:
                raise RegistryError(
                    f"{method} {redact_url(target)}: gave up after {attempt + 1} attempts ({reason})"
                )
            self.stats.retries += 1
            self.stats.retry_reasons[reason] += 1
            self.stats.waited_seconds += delay
            waited += delay
            log.info("retrying %s %s after %s (%.1fs)", method, redact_url(target), reason, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate verification failed (set `insecure: true` for this registry only if you trust it)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
