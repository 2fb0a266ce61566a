"""Resumable bodies: a GET whose body breaks off after the headers is picked up again, not failed.

A whole document (manifest, listing) is fetched again; a long body (a blob) continues with
`Range: bytes=<received>-`, and a server that ignores Range has the bytes already passed on skipped. This
is the top layer, so a resumed request goes through redirects, auth, retries and limits like the first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gcrsync.errors import RegistryError
from gcrsync.registry.options import TransportOptions
from gcrsync.registry.request import BodyBroken, Request, Response, Sender
from gcrsync.registry.stats import TransportStats

log = logging.getLogger("gcrsync.http")

MAX_RESUMES = 5  # fresh starts of one streamed body


class RangeRefused(RegistryError):
    """A resumed request was answered with neither 200 nor 206 (416: nothing at that offset)."""


def _range_ok(header: str | None, start: int, total: int | None) -> bool:
    """Does a 206's Content-Range hold exactly the bytes asked for (from `start`, of a body of `total`)?"""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    return m is not None and int(m.group(1)) == start and (
        total is None or m.group(3) == "*" or int(m.group(3)) == total)


class Resuming:
    def __init__(self, inner: Sender, options: TransportOptions, stats: TransportStats) -> None:
        self.inner = inner
        self.options = options
        self.stats = stats

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        async with self.inner.send(request) as resp:
            if request.method == "GET" and request.body is None and resp.status == 200:
                yield _ResumableResponse(resp, self)
            else:
                yield resp


class _ResumableResponse(Response):
    def __init__(self, first: Response, layer: Resuming) -> None:
        super().__init__(first.raw, first.request)
        self._layer = layer

    async def read(self, limit: int) -> bytes:
        attempts = max(1, self._layer.options.max_attempts)
        try:
            return await super().read(limit)
        except BodyBroken as exc:
            failure = exc
        for _attempt in range(1, attempts):
            self._layer.stats.retried("body-cut")
            log.info("retrying %s after its body broke off (%s)", self.request, failure.reason)
            try:
                async with self._layer.inner.send(self.request) as again:
                    if again.status != 200:
                        raise RangeRefused(f"{self.request}: HTTP {again.status} on a retry", status=again.status)
                    return await again.read(limit)
            except BodyBroken as exc:
                failure = exc
        raise RegistryError(f"{self.request}: response body kept breaking off ({failure.reason})")

    async def chunks(self, *, expected: int | None = None) -> AsyncIterator[bytes]:
        total = expected if expected is not None and expected >= 0 else self.content_length
        received = 0
        resumes = 0
        try:
            async for chunk in super().chunks(expected=total):
                received += len(chunk)
                yield chunk
            return
        except BodyBroken as exc:
            failure = exc
        ranges = True  # False once a server sent a 206 for the wrong bytes: whole bodies from then on
        while True:
            resumes += 1
            self._layer.stats.retried("blob-resume")
            if resumes > MAX_RESUMES:
                raise RegistryError(f"{self.request}: transfer kept failing ({failure.reason})")
            log.info("resuming %s at byte %d after %s", self.request, received, failure.reason)
            again = self.request.with_headers({"Range": f"bytes={received}-"}) if ranges else self.request
            try:
                async with self._layer.inner.send(again) as resp:
                    if resp.status not in (200, 206):
                        raise RangeRefused(f"{self.request}: HTTP {resp.status} when resuming at byte {received}",
                                           status=resp.status)
                    if resp.status == 206 and not _range_ok(resp.headers.get("Content-Range"), received, total):
                        # Bytes from elsewhere would be spliced in at the wrong offset (the digest check would
                        # only catch it at the end): ask again without Range and skip what was passed on.
                        log.warning("%s: resumed at byte %d but got Content-Range %r: fetching it whole",
                                    self.request, received, (resp.headers.get("Content-Range") or "")[:80])
                        ranges = False
                        failure = BodyBroken(f"{self.request}: wrong Content-Range", reason="content-range")
                        continue
                    skip = received if resp.status == 200 else 0  # no Range support: passed-on bytes skipped
                    rest = None if total is None else total - received + skip
                    async for chunk in resp.chunks(expected=rest):
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        received += len(chunk)
                        yield chunk
                    return
            except BodyBroken as exc:
                failure = exc
