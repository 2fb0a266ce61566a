"""Request statistics and the debug log line of every request (one layer, right above the wire)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gcrsync.registry.request import Request, Response, Sender, Unreachable, redact_url

log = logging.getLogger("gcrsync.http")


@dataclass
class TransportStats:
    """Counters for reports, tests and the benchmark; every layer adds to the one instance of its stack."""

    requests: Counter[str] = field(default_factory=Counter)  # by "METHOD host"
    retries: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)
    waited_seconds: float = 0.0
    rate_limit_slowdowns: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def retried(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] += 1


class Counting:
    """Counts each request that reached a server (or failed to), and logs it at debug level."""

    def __init__(self, inner: Sender, stats: TransportStats) -> None:
        self.inner = inner
        self.stats = stats

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        key = f"{request.method} {request.host}"
        answered = False
        try:
            async with self.inner.send(request) as resp:
                answered = True
                self.stats.requests[key] += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s %s → %d", request.method, redact_url(request.url), resp.status)
                yield resp
        except Unreachable:
            if not answered:  # tried and failed: it still counts (a policy refusal never gets here)
                self.stats.requests[key] += 1
            raise
