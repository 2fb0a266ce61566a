"""Docker Hub: the Hub web API lists a namespace's repositories and their tags with digests and times.

Facts (../shared/research/registries.md, with sources): pages of at most 100 with an absolute `next`; since
2026-08-11 anonymous requests past offset 1000 get `403 {"message": "pagination offset too large for
anonymous requests; …"}`; without auth, private repositories are left out silently. So: with credentials
for docker.io the API calls are authenticated (POST /v2/auth/token, renewed before expiry, by the auth
layer) and private repositories are listed too; without them, a repository whose tags run past the cap is
listed through the registry's own cursor-paged `tags/list` instead. Either the listing is complete or the
namespace fails with a message naming the cause and the fix.
"""

from __future__ import annotations

import logging

from yarl import URL

from gcrsync.errors import AuthError, ConfigError, NotFound
from gcrsync.registry.discovery.catalog import plain_tags
from gcrsync.registry.discovery.gcr import sorted_tags
from gcrsync.registry.listing_parsers import is_valid_component, parse_hub_repositories, parse_hub_tags
from gcrsync.registry.pages import Lister, api_pages, gather
from gcrsync.types import DiscoveredRepo, TagInfo

log = logging.getLogger("gcrsync.discovery")

PAGE_SIZE = 100  # the API's maximum
ANONYMOUS_OFFSET_CAP = 1000


def login_url(api: str) -> URL:
    return URL(f"{api}/v2/auth/token")


async def list_dockerhub(lister: Lister, api: str, *, authenticated: bool,
                         registry: str = "docker.io") -> list[DiscoveredRepo]:
    ns = lister.need_namespace("dockerhub")
    if not is_valid_component(ns):
        raise ConfigError(f"a Docker Hub namespace is a single name, got {ns!r}")
    modern = f"{api}/v2/namespaces/{ns}/repositories?page_size={PAGE_SIZE}"
    try:
        pages = await lister.next_pages(modern, parse_hub_repositories)
        tags_url = f"{api}/v2/namespaces/{ns}/repositories/{{}}/tags?page_size={PAGE_SIZE}"
    except NotFound:
        # Older or mirrored Hub APIs only know the /v2/repositories/ form.
        legacy = f"{api}/v2/repositories/{ns}/?page_size={PAGE_SIZE}"
        pages = await lister.next_pages(legacy, parse_hub_repositories)
        tags_url = f"{api}/v2/repositories/{ns}/{{}}/tags/?page_size={PAGE_SIZE}"
    except AuthError as exc:
        raise _explained(exc, registry, ns, authenticated) from None
    names = dict.fromkeys(name for page in pages for name in page)
    if not authenticated:
        log.info("listing %s/%s without Docker Hub credentials: private repositories are not shown", registry, ns)

    async def one(name: str) -> DiscoveredRepo:
        tags: dict[str, TagInfo] = {}
        try:
            async for found in api_pages(lister.get, tags_url.format(name), parse_hub_tags):
                tags.update(found)
        except AuthError as exc:
            if authenticated or exc.status != 403 or len(tags) < ANONYMOUS_OFFSET_CAP:
                raise _explained(exc, registry, ns, authenticated) from None
            # The anonymous paging cap: the registry's own cursor-paged listing is complete; the tags the
            # API did not reach have no digest yet (the planner HEADs those).
            log.info("%s/%s/%s has over %d tags: listing them through the registry instead",
                     registry, ns, name, ANONYMOUS_OFFSET_CAP)
            complete = await plain_tags(lister, f"{ns}/{name}")
            return DiscoveredRepo(complete.repository,
                                  {tag: tags.get(tag, info) for tag, info in complete.tags.items()})
        return DiscoveredRepo(f"{ns}/{name}", sorted_tags(tags))

    return await gather(one(name) for name in names)


def _explained(exc: AuthError, registry: str, ns: str, authenticated: bool) -> AuthError:
    fix = (f"check the {registry} credentials (a personal access token with read access)" if authenticated
           else f"configure {registry} credentials (registries: {registry}: username_env/password_env, "
                "or docker login)")
    return AuthError(f"listing {registry}/{ns} through the Docker Hub API was refused: {exc}; {fix}",
                     status=exc.status)
