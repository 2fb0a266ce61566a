"""The retry policy: transient failures and statuses are tried again, after Retry-After or a backoff.

Only requests whose body can be sent again are retried here; a streamed upload that fails is started over
by the engine (fresh source stream, fresh upload session). Statuses that persist after the last attempt
are handed to the caller as they are, so it can turn them into a clear error with the registry's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gcrsync.errors import RegistryError
from gcrsync.registry.options import TransportOptions
from gcrsync.registry.request import Request, Response, Sender, Unreachable, redact_url
from gcrsync.registry.stats import TransportStats

log = logging.getLogger("gcrsync.http")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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


class Retrying:
    def __init__(self, inner: Sender, options: TransportOptions, stats: TransportStats) -> None:
        self.inner = inner
        self.options = options
        self.stats = stats

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.options.max_retry_wait, self.options.backoff_base * 2.0**attempt)
        return float(ceiling * random.uniform(0.5, 1.0))

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        attempts = max(1, self.options.max_attempts) if request.replayable else 1
        waited = 0.0
        async with contextlib.AsyncExitStack() as stack:
            for attempt in range(attempts):
                last = attempt == attempts - 1
                try:
                    resp = await stack.enter_async_context(self.inner.send(request))
                except Unreachable as exc:
                    if last:
                        raise
                    reason, delay = exc.reason, self.backoff(attempt)
                else:
                    if resp.status not in RETRY_STATUSES or last:
                        break
                    reason = str(resp.status)
                    after = parse_retry_after(resp.headers.get("Retry-After"), self.options.max_retry_wait)
                    delay = after if after is not None else self.backoff(attempt)
                    if resp.status == 429 and after is None:
                        delay = max(delay, 1.0)
                    await stack.aclose()  # release the connection (and the host slot) before sleeping
                if waited + delay > self.options.max_total_wait:
                    raise RegistryError(f"{request.method} {redact_url(request.url)}: gave up after "
                                        f"{attempt + 1} attempts ({reason})")
                self.stats.retried(reason)
                self.stats.waited_seconds += delay
                waited += delay
                log.info("retrying %s %s after %s (%.1fs)", request.method, redact_url(request.url), reason, delay)
                await asyncio.sleep(delay)
            yield resp
