"""What every listing shares (the discovery strategies, and a repository's tag list): the fetcher interface,
a bounded pool of listing requests, and pagination that can neither loop, run for ever, nor leave the host
it started on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gcrsync.errors import ConfigError
from gcrsync.registry.listing_parsers import fail, next_link

# A hostile or buggy server could otherwise paginate for ever with fresh URLs.
MAX_PAGES = 10_000
T = TypeVar("T")


@dataclass
class JsonPage:
    body: object  # parsed JSON
    headers: Mapping[str, str]  # case-insensitive
    url: str  # the URL that answered (after redirects): relative links resolve against it


class JsonFetcher(Protocol):
    async def get_json(self, url: str) -> JsonPage:
        """GET an absolute URL (registry or API host), auth handled by the implementation. Raises
        gcrsync.errors.RegistryError (subclasses NotFound/AuthError) on HTTP errors after retries."""
        ...


async def gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """asyncio.gather that cancels the siblings on the first failure and re-raises it as is."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Lister:
    """One namespace listing: the fetcher, the registry's base URL, the namespace, a request pool."""

    def __init__(self, fetcher: JsonFetcher, base: str, namespace: str, query_jobs: int) -> None:
        self.fetcher = fetcher
        self.base = base
        self.namespace = namespace
        self._slots = asyncio.Semaphore(query_jobs)

    async def get(self, url: str) -> JsonPage:
        # The pool is held only for the request itself, never across recursion, so deep gcr trees
        # cannot deadlock it.
        async with self._slots:
            return await self.fetcher.get_json(url)

    def need_namespace(self, method: str) -> str:
        if not self.namespace:
            raise ConfigError(f"discovery method {method!r} needs a namespace")
        return self.namespace

    async def link_pages(self, first: str) -> list[JsonPage]:
        """Every page of an OCI listing, following Link rel="next" (resolved against the URL that
        answered, so a redirected listing pages on the host that serves it) on that host only."""
        pages: list[JsonPage] = []
        guard = PageGuard()
        url: str | None = first
        while url is not None:
            guard.check(url)
            page = await self.get(url)
            pages.append(page)
            url = next_link(page.url, page.headers)
        return pages

    async def next_pages(self, first: str, parse: Callable[[str, object], tuple[T, str | None]]) -> list[T]:
        """Each page's parsed content, following an API's own `next` URL (Docker Hub style)."""
        return [content async for content in api_pages(self.get, first, parse)]


class PageGuard:
    """Refuses a pagination that comes back to a page it saw, or runs past MAX_PAGES."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, url: str) -> None:
        if url in self._seen or len(self._seen) >= MAX_PAGES:
            raise fail(url, "pagination loops or never ends")
        self._seen.add(url)


async def api_pages(get: Callable[[str], Awaitable[JsonPage]], first: str,
                    parse: Callable[[str, object], tuple[T, str | None]]) -> AsyncIterator[T]:
    """Each page's parsed content in turn, following the API's own `next` URL (Docker Hub style), so a
    caller can keep what earlier pages gave when a later one is refused."""
    guard = PageGuard()
    url: str | None = first
    while url is not None:
        guard.check(url)
        page = await get(url)
        content, url = parse(page.url, page.body)
        yield content
