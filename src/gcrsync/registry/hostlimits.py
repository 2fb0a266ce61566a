"""Per-host limits: a concurrency cap, request pacing, and slowing down when a RateLimit budget runs low.

A slot is held from sending a request until its response is released. A request made *inside* another
one to the same host (a streamed PUT whose body is the source's GET, when source and target share a
registry) rides on the outer request's slot instead of waiting for a second one: otherwise `jobs` PUTs
holding every slot would each wait for a slot for their own GET, for ever. "Inside" is tracked with a
context variable, which aiohttp's body-writer task inherits from the request that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token

from gcrsync.registry.options import HostPolicy, TransportOptions
from gcrsync.registry.request import Request, Response, Sender
from gcrsync.registry.stats import TransportStats

log = logging.getLogger("gcrsync.http")

_HOLDING: ContextVar[frozenset[str]] = ContextVar("gcrsync_hosts_holding_a_slot", default=frozenset())


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


class _HostGate:
    """Concurrency cap, request pacing and rate-limit pause for one host."""

    def __init__(self, policy: HostPolicy) -> None:
        self.slots = asyncio.Semaphore(policy.max_concurrency) if policy.max_concurrency else None
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


class HostLimits:
    """Waits for the host's turn and slot before each attempt; notes RateLimit headers of each answer."""

    def __init__(self, inner: Sender, options: TransportOptions, stats: TransportStats) -> None:
        self.inner = inner
        self.options = options
        self.stats = stats
        self._gates: dict[str, _HostGate] = {}

    def _gate(self, host: str) -> _HostGate:
        gate = self._gates.get(host)
        if gate is None:
            gate = self._gates[host] = _HostGate(self.options.policy(host))
        return gate

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        host = request.host
        gate = self._gate(host)
        await gate.wait_turn(self.stats)
        holding = _HOLDING.get()
        async with contextlib.AsyncExitStack() as stack:
            if gate.slots is not None and host not in holding:
                await stack.enter_async_context(gate.slots)
                token = _HOLDING.set(holding | {host})
                stack.callback(_release_marker, token)
            resp = await stack.enter_async_context(self.inner.send(request))
            self._note_rate_limit(host, resp.headers)
            yield resp

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


def _release_marker(token: Token[frozenset[str]]) -> None:
    # Reset in the context that set it; a response finalised elsewhere (rare) just leaves it to that context.
    with contextlib.suppress(ValueError):
        _HOLDING.reset(token)
