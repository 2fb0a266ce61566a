"""quay.io: the v1 repository API lists a namespace's repositories, the v1 tag API their tags with
digests and times (offset pages, newest first)."""

from __future__ import annotations

from urllib.parse import quote

from gcrsync.errors import ConfigError
from gcrsync.registry.discovery.gcr import sorted_tags
from gcrsync.registry.discovery.pages import MAX_PAGES, Lister, gather
from gcrsync.registry.listing_parsers import (
    DiscoveryError,
    fail,
    is_valid_component,
    parse_quay_repositories,
    parse_quay_tags,
)
from gcrsync.types import DiscoveredRepo, TagInfo


async def list_quay(lister: Lister, api: str) -> list[DiscoveredRepo]:
    ns = lister.need_namespace("quay")
    if not is_valid_component(ns):
        raise ConfigError(f"a Quay namespace is a single name, got {ns!r}")
    first = f"{api}/api/v1/repository?namespace={quote(ns, safe='')}&public=true"
    names: dict[str, None] = {}
    tokens: set[str] = set()
    url = first
    while True:
        page = await lister.get(url)
        found, token = parse_quay_repositories(page.url, page.body)
        names.update(dict.fromkeys(found))
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
            page = await lister.get(page_url)
            found, more = parse_quay_tags(page.url, page.body)
            tags.update(found)
            if not more:
                return DiscoveredRepo(f"{ns}/{name}", sorted_tags(tags))
        raise DiscoveryError(f"listing tags of quay repository {ns}/{name}: pagination never ends")

    return await gather(one(name) for name in names)
