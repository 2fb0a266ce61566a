"""quay.io (and on-prem Quay): which repositories a namespace holds, and every tag of each.

Facts (../shared/research/registries.md, from quay/quay `endpoints/api/tag.py`, `data/model/oci/tag.py`,
`endpoints/v2/catalog.py`):
- The v1 API lists a namespace's *public* repositories (`/api/v1/repository?namespace=&public=true`, an
  opaque `next_page` token) and a repository's tags with digests, push times, sizes and `is_sparse`
  (`/api/v1/repository/<ns>/<repo>/tag/`). Its tag pages are offset pages, newest first: a tag deleted or
  expired during the walk shifts the rest, and one tag is silently skipped.
- The registry's own `tags/list` pages by cursor (`Link: <…?n=…&last=…>; rel="next"`) and skips nothing.
- Anonymous `/v2/_catalog` answers an empty list; with robot-account credentials it lists the
  repositories the account can read (private ones included), without a challenge of its own.

So: the tag *list* is always the registry's cursor-paged `tags/list`, walked after the v1 tag pages, and the
v1 API only adds metadata (digest, push time, size, sparse) to tags that listing holds; a tag the v1 walk
skipped simply has no digest (the planner HEADs it). With credentials for the registry, `_catalog`
adds the private repositories the account can read (their tags come from `tags/list` alone: the v1 API
would need an OAuth application token).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from gcrsync.errors import ConfigError, RegistryError
from gcrsync.registry.discovery.catalog import plain_tags
from gcrsync.registry.discovery.gcr import sorted_tags
from gcrsync.registry.listing_parsers import (
    DiscoveryError,
    describe,
    fail,
    is_valid_component,
    parse_catalog,
    parse_quay_repositories,
    parse_quay_tags,
)
from gcrsync.registry.pages import MAX_PAGES, Lister, gather
from gcrsync.types import DiscoveredRepo, TagInfo

log = logging.getLogger("gcrsync.discovery")


async def list_quay(lister: Lister, api: str, *, authenticated: bool = False) -> list[DiscoveredRepo]:
    ns = lister.need_namespace("quay")
    if not is_valid_component(ns):
        raise ConfigError(f"a Quay namespace is a single name, got {ns!r}")
    public = await _public_repositories(lister, api, ns)
    names: dict[str, None] = dict.fromkeys(public)
    if authenticated:
        names.update(dict.fromkeys(await _catalog_repositories(lister, ns)))
    else:
        log.info("listing %s/%s without registry credentials: only public repositories are listed "
                 "(a robot account's credentials add the private ones)", describe(lister.base), ns)

    async def one(name: str) -> DiscoveredRepo:
        # v1 first, the cursor listing second: the complete list is the newer of the two views.
        known = await _v1_tags(lister, api, ns, name) if name in public else {}
        complete = await plain_tags(lister, f"{ns}/{name}")
        tags = {tag: known.get(tag, info) for tag, info in complete.tags.items()}
        return DiscoveredRepo(f"{ns}/{name}", sorted_tags(tags))

    return await gather(one(name) for name in names)


async def _public_repositories(lister: Lister, api: str, ns: str) -> list[str]:
    first = f"{api}/api/v1/repository?namespace={quote(ns, safe='')}&public=true"
    names: dict[str, None] = {}
    tokens: set[str] = set()
    url = first
    while True:
        page = await lister.get(url)
        found, token = parse_quay_repositories(page.url, page.body)
        names.update(dict.fromkeys(found))
        if token is None:
            return list(names)
        if token in tokens or len(tokens) >= MAX_PAGES:
            raise fail(url, "pagination loops or never ends")
        tokens.add(token)
        url = f"{first}&next_page={quote(token, safe='')}"


async def _catalog_repositories(lister: Lister, ns: str) -> list[str]:
    """The namespace's repositories in the registry's `_catalog`, as the configured account sees them."""
    # Quay answers an anonymous _catalog with 200 and [] (no challenge), so the credentials would never
    # be sent: `GET /v2/` (401 with the challenge) teaches the auth layer how to log in first. Its body
    # (quay: `true`) does not matter, only that it answers 200 once logged in.
    try:
        await lister.get(f"{lister.base}/v2/")
    except RegistryError as exc:
        if exc.status is not None:
            raise
    names: list[str] = []
    for page in await lister.link_pages(f"{lister.base}/v2/_catalog?n=100"):
        for name in parse_catalog(page.url, page.body):
            if name.startswith(ns + "/"):
                names.append(name[len(ns) + 1 :])
    return names


async def _v1_tags(lister: Lister, api: str, ns: str, name: str) -> dict[str, TagInfo]:
    tags: dict[str, TagInfo] = {}
    base = f"{api}/api/v1/repository/{ns}/{name}/tag/?onlyActiveTags=true&limit=100"
    for number in range(1, MAX_PAGES + 1):
        page = await lister.get(f"{base}&page={number}")
        found, more = parse_quay_tags(page.url, page.body)
        tags.update(found)
        if not more:
            return tags
    raise DiscoveryError(f"listing tags of quay repository {ns}/{name}: pagination never ends")
