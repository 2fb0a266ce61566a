"""The plain OCI listings: `/v2/_catalog` filtered by the namespace, or an explicit repository list, then
each repository's `tags/list` with Link pagination (no digests: the planner HEADs the tags)."""

from __future__ import annotations

from gcrsync.errors import ConfigError
from gcrsync.registry.discovery.gcr import merge, sorted_tags
from gcrsync.registry.listing_parsers import is_valid_repository, parse_catalog, parse_tags_list
from gcrsync.registry.pages import Lister, gather
from gcrsync.types import DiscoveredRepo, TagInfo


async def list_catalog(lister: Lister) -> list[DiscoveredRepo]:
    ns = lister.namespace
    names: dict[str, None] = {}
    for page in await lister.link_pages(f"{lister.base}/v2/_catalog?n=1000"):
        for name in parse_catalog(page.url, page.body):
            if not ns or name == ns or name.startswith(ns + "/"):
                names[name] = None
    return await gather(plain_tags(lister, name) for name in names)


async def list_given(lister: Lister, repositories: list[str]) -> list[DiscoveredRepo]:
    ns = lister.namespace
    names: dict[str, None] = {}
    for given in repositories:
        rel = given.strip("/")
        if ns and rel != ns and not rel.startswith(ns + "/"):
            rel = f"{ns}/{rel}"  # relative to the namespace
        if not is_valid_repository(rel):
            raise ConfigError(f"invalid repository {given!r} in the list for namespace {ns!r}")
        names[rel] = None
    return await gather(plain_tags(lister, name) for name in names)


async def plain_tags(lister: Lister, name: str, *, base: str | None = None) -> DiscoveredRepo:
    """Every tag of one repository through the registry's own cursor-paged `tags/list`."""
    tags: dict[str, TagInfo] = {}
    for page in await lister.link_pages(f"{base or lister.base}/v2/{name}/tags/list?n=1000"):
        # Digests stay None unless the registry speaks the GCR extension; the planner HEADs them.
        merge(tags, parse_tags_list(page.url, page.body).tags)
    return DiscoveredRepo(name, sorted_tags(tags))
