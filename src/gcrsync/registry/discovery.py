"""Namespace discovery: which repositories and tags a source namespace holds.

One strategy per registry family, because `_catalog` is unusable on the public registries we mirror
from (gcr.io lists every project or nothing, registry.k8s.io answers 404, Docker Hub 401, quay.io an
empty list): GCR/Artifact Registry's recursive `tags/list` extension, the Docker Hub and Quay web APIs,
the OCI `_catalog`, or an explicit repository list.

Any failure - HTTP error, malformed body, a pagination link to another host - fails the whole namespace.
An empty or partial answer is never taken for "no images", since that is how the original gcrsync came
to skip or re-push whole repositories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Literal, Protocol, TypeVar
from urllib.parse import quote

from gcrsync.errors import ConfigError, InvalidReference, NotFound
from gcrsync.reference import validate_registry
from gcrsync.registry.listing_parsers import (
    DiscoveryError,
    check_repository,
    fail,
    is_valid_component,
    is_valid_repository,
    next_link,
    parse_catalog,
    parse_hub_repositories,
    parse_hub_tags,
    parse_quay_repositories,
    parse_quay_tags,
    parse_tags_list,
)
from gcrsync.types import DiscoveredRepo, TagInfo

__all__ = [
    "DiscoveredRepo",
    "DiscoveryError",
    "JsonFetcher",
    "Method",
    "TagInfo",
    "default_method",
    "discover",
]

Method = Literal["auto", "gcr", "catalog", "dockerhub", "quay", "list"]
_METHODS = frozenset({"auto", "gcr", "catalog", "dockerhub", "quay", "list"})

# A hostile or buggy server could otherwise paginate for ever with fresh URLs.
MAX_PAGES = 10_000
_T = TypeVar("_T")


class JsonFetcher(Protocol):
    async def get_json(self, url: str) -> tuple[object, Mapping[str, str]]:
        """GET an absolute URL (registry or API host), auth handled by the implementation. Returns the parsed
        JSON body and the response headers (case-insensitive mapping). Raises gcrsync.errors.RegistryError
        (subclasses NotFound/AuthError) on HTTP errors after retries."""
        ...


def default_method(host: str) -> str:
    """The discovery method that works on a registry host without configuration."""
    name = host.lower().rstrip("/").rsplit(":", 1)[0] if not host.startswith("[") else host.lower()
    if name in ("gcr.io", "registry.k8s.io") or name.endswith((".gcr.io", "-docker.pkg.dev")):
        return "gcr"
    if name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return "dockerhub"
    if name == "quay.io":
        return "quay"
    return "catalog"


async def discover(
    fetcher: JsonFetcher,
    registry_host: str,
    namespace: str,
    method: Method,
    *,
    repositories: list[str] | None = None,
    query_jobs: int = 8,
    scheme: str = "https",
    hub_api: str = "https://hub.docker.com",
    quay_api: str = "https://quay.io",
) -> list[DiscoveredRepo]:
    """List every repository (full registry path) under namespace with its tags, sorted by repository."""
    if method not in _METHODS:
        raise ConfigError(f"unknown discovery method {method!r}")
    try:
        validate_registry(registry_host)
    except InvalidReference as exc:
        raise ConfigError(str(exc)) from None
    if scheme not in ("http", "https"):
        raise ConfigError(f"invalid registry scheme {scheme!r}")
    if query_jobs < 1:
        raise ConfigError(f"query_jobs must be at least 1, got {query_jobs}")
    ns = namespace.strip("/")
    if ns and not is_valid_repository(ns):
        raise ConfigError(f"invalid namespace {namespace!r} (lowercase path components separated by '/')")
    chosen = default_method(registry_host) if method == "auto" else method
    run = _Discovery(fetcher, f"{scheme}://{registry_host}", ns, query_jobs)
    if chosen == "gcr":
        found = await run.gcr()
    elif chosen == "catalog":
        found = await run.catalog()
    elif chosen == "dockerhub":
        found = await run.dockerhub(hub_api.rstrip("/"))
    elif chosen == "quay":
        found = await run.quay(quay_api.rstrip("/"))
    else:
        if repositories is None:
            raise ConfigError(f"discovery method 'list' needs a repository list for namespace {namespace!r}")
        found = await run.listed(repositories)
    return sorted(found, key=lambda repo: repo.repository)


async def _gather(awaitables: Iterable[Awaitable[_T]]) -> list[_T]:
    """asyncio.gather that cancels the siblings on the first failure and re-raises it as is."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _merge(into: dict[str, TagInfo], page: Mapping[str, TagInfo]) -> None:
    """Add a page's tags, never letting a digest-less mention overwrite what an earlier page knew."""
    for tag, info in page.items():
        if tag not in into or info.digest is not None:
            into[tag] = info


def _sorted_tags(tags: Mapping[str, TagInfo]) -> dict[str, TagInfo]:
    return {tag: tags[tag] for tag in sorted(tags)}


class _Discovery:
    def __init__(self, fetcher: JsonFetcher, base: str, namespace: str, query_jobs: int) -> None:
        self._fetcher = fetcher
        self._base = base
        self._ns = namespace
        self._slots = asyncio.Semaphore(query_jobs)

    async def _get(self, url: str) -> tuple[object, Mapping[str, str]]:
        # The semaphore is held only for the request itself, never across recursion, so deep gcr trees
        # cannot deadlock the pool.
        async with self._slots:
            return await self._fetcher.get_json(url)

    def _need_namespace(self, method: str) -> None:
        if not self._ns:
            raise ConfigError(f"discovery method {method!r} needs a namespace")

    async def _link_pages(self, first: str) -> list[tuple[str, object]]:
        """Every page of an OCI listing, following Link rel="next" on the same host only."""
        pages: list[tuple[str, object]] = []
        seen: set[str] = set()
        url: str | None = first
        while url is not None:
            if url in seen or len(pages) >= MAX_PAGES:
                raise fail(url, "pagination loops or never ends")
            seen.add(url)
            body, headers = await self._get(url)
            pages.append((url, body))
            url = next_link(url, headers)
        return pages

    # --- gcr.io / Artifact Registry ----------------------------------------------------------------

    async def gcr(self) -> list[DiscoveredRepo]:
        # An empty namespace lists the registry root (/v2/tags/list): registry.k8s.io serves its images
        # at top level and forwards the listing to Artifact Registry.
        return await self._gcr_node(self._ns, root=True)

    async def _gcr_node(self, path: str, *, root: bool = False) -> list[DiscoveredRepo]:
        tags: dict[str, TagInfo] = {}
        children: dict[str, None] = {}
        node = f"{path}/" if path else ""
        for url, body in await self._link_pages(f"{self._base}/v2/{node}tags/list"):
            page = parse_tags_list(url, body)
            _merge(tags, page.tags)
            for child in page.children:
                children[check_repository(url, f"{node}{child}")] = None
        found: list[DiscoveredRepo] = []
        # A node is a repository when it holds tags; a childless non-root node is an (empty) repository
        # too. The namespace root with nothing in it is just an empty namespace.
        if tags or (not children and not root):
            found.append(DiscoveredRepo(path, _sorted_tags(tags)))
        for below in await _gather(self._gcr_node(child) for child in children):
            found.extend(below)
        return found

    # --- OCI _catalog and explicit lists -----------------------------------------------------------

    async def catalog(self) -> list[DiscoveredRepo]:
        names: dict[str, None] = {}
        for url, body in await self._link_pages(f"{self._base}/v2/_catalog?n=1000"):
            for name in parse_catalog(url, body):
                if not self._ns or name == self._ns or name.startswith(self._ns + "/"):
                    names[name] = None
        return await _gather(self._plain_tags(name) for name in names)

    async def listed(self, repositories: list[str]) -> list[DiscoveredRepo]:
        names: dict[str, None] = {}
        for given in repositories:
            rel = given.strip("/")
            if self._ns and rel != self._ns and not rel.startswith(self._ns + "/"):
                rel = f"{self._ns}/{rel}"  # relative to the namespace
            if not is_valid_repository(rel):
                raise ConfigError(f"invalid repository {given!r} in the list for namespace {self._ns!r}")
            names[rel] = None
        return await _gather(self._plain_tags(name) for name in names)

    async def _plain_tags(self, name: str) -> DiscoveredRepo:
        tags: dict[str, TagInfo] = {}
        for url, body in await self._link_pages(f"{self._base}/v2/{name}/tags/list?n=1000"):
            # Digests stay None unless the registry speaks the GCR extension; the planner HEADs them.
            _merge(tags, parse_tags_list(url, body).tags)
        return DiscoveredRepo(name, _sorted_tags(tags))

    # --- Docker Hub --------------------------------------------------------------------------------

    async def dockerhub(self, api: str) -> list[DiscoveredRepo]:
        self._need_namespace("dockerhub")
        ns = self._ns
        if not is_valid_component(ns):
            raise ConfigError(f"a Docker Hub namespace is a single name, got {ns!r}")
        modern = f"{api}/v2/namespaces/{ns}/repositories?page_size=100"
        try:
            pages = await self._hub_pages(modern, parse_hub_repositories)
            tags_url = f"{api}/v2/namespaces/{ns}/repositories/{{}}/tags?page_size=100"
        except NotFound:
            # Older or mirrored Hub APIs only know the /v2/repositories/ form.
            legacy = f"{api}/v2/repositories/{ns}/?page_size=100"
            pages = await self._hub_pages(legacy, parse_hub_repositories)
            tags_url = f"{api}/v2/repositories/{ns}/{{}}/tags/?page_size=100"
        names = dict.fromkeys(name for page in pages for name in page)

        async def one(name: str) -> DiscoveredRepo:
            tags: dict[str, TagInfo] = {}
            for page in await self._hub_pages(tags_url.format(name), parse_hub_tags):
                tags.update(page)
            return DiscoveredRepo(f"{ns}/{name}", _sorted_tags(tags))

        return await _gather(one(name) for name in names)

    async def _hub_pages(self, first: str, parse: Callable[[str, object], tuple[_T, str | None]]) -> list[_T]:
        """Each page's parsed content, following the API's absolute `next` URL on the same host only."""
        items: list[_T] = []
        seen: set[str] = set()
        url: str | None = first
        pages = 0
        while url is not None:
            if url in seen or pages >= MAX_PAGES:
                raise fail(url, "pagination loops or never ends")
            seen.add(url)
            pages += 1
            body, _ = await self._get(url)
            page, url = parse(url, body)
            items.append(page)
        return items

    # --- Quay --------------------------------------------------------------------------------------

    async def quay(self, api: str) -> list[DiscoveredRepo]:
        self._need_namespace("quay")
        ns = self._ns
        if not is_valid_component(ns):
            raise ConfigError(f"a Quay namespace is a single name, got {ns!r}")
        first = f"{api}/api/v1/repository?namespace={quote(ns, safe='')}&public=true"
        names: dict[str, None] = {}
        tokens: set[str] = set()
        url = first
        while True:
            body, _ = await self._get(url)
            page, token = parse_quay_repositories(url, body)
            names.update(dict.fromkeys(page))
            if token is None:
                break
            if token in tokens or len(tokens) >= MAX_PAGES:
                raise fail(url, "pagination loops or never ends")
            tokens.add(token)
            url = f"{first}&next_page={quote(token, safe='')}"

        tags_base = f"{api}/api/v1/repository/{ns}"

        async def one(name: str) -> DiscoveredRepo:
            tags: dict[str, TagInfo] = {}
            for number in range(1, MAX_PAGES + 1):
                page_url = f"{tags_base}/{name}/tag/?onlyActiveTags=true&limit=100&page={number}"
                body, _ = await self._get(page_url)
                page, more = parse_quay_tags(page_url, body)
                tags.update(page)
                if not more:
                    return DiscoveredRepo(f"{ns}/{name}", _sorted_tags(tags))
            raise DiscoveryError(f"listing tags of quay repository {ns}/{name}: pagination never ends")

        return await _gather(one(name) for name in names)
