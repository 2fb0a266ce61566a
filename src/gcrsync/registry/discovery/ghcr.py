"""ghcr.io: GitHub's packages REST API lists an owner's container packages and their tagged versions.

Facts (../shared/research/registries.md; docs.github.com/rest/packages/packages): ghcr.io serves no
`_catalog` (GitHub staff in microsoft/vscode-docker#1525); `GET /orgs/{org}/packages?package_type=container`
(users: `/users/{user}/packages`) lists the packages, `GET /orgs/{org}/packages/container/{name}/versions`
their versions: `name` is the manifest digest, the tags are in `metadata.container.tags`. Every call needs
`Authorization: Bearer <token>` (a token with read:packages; 401 `{"message": "Requires authentication"}`
without); a package name holding '/' is sent as `%2F`; pages follow `Link` headers (`per_page` ≤ 100).

The token is the registry's password (`docker login ghcr.io` with a personal access token, or
`registries: ghcr.io: token_env:`), sent as the bearer by the auth layer (see `ApiLogin`). The versions give
each tag's digest, so planning needs no manifest request per tag. A namespace `owner/prefix` lists only the
packages under that prefix. GitHub Enterprise: `registries: <its registry host>: api: https://<host>/api/v3`.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from gcrsync.errors import AuthError, NotFound
from gcrsync.registry.discovery.gcr import sorted_tags
from gcrsync.registry.listing_parsers import parse_github_packages, parse_github_versions
from gcrsync.registry.pages import Lister, gather
from gcrsync.types import DiscoveredRepo, TagInfo

PER_PAGE = 100  # the API's maximum


async def list_ghcr(lister: Lister, api: str, *, authenticated: bool) -> list[DiscoveredRepo]:
    ns = lister.need_namespace("ghcr")
    registry = urlsplit(lister.base).netloc
    if not authenticated:
        raise AuthError(
            f"listing {registry}/{ns} needs a GitHub token with read:packages (the GitHub packages API at "
            f"{api} refuses anonymous requests): set registries: {registry}: token_env: <VARIABLE HOLDING "
            f"THE TOKEN> in the config, or docker login {registry} with the token as the password",
            status=401)
    owner, _, prefix = ns.partition("/")
    kind = "orgs"
    try:
        pages = await lister.link_pages(_packages_url(api, kind, owner))
    except NotFound:  # not an organization: a user's packages
        kind = "users"
        pages = await lister.link_pages(_packages_url(api, kind, owner))
    except AuthError as exc:
        raise _explained(exc, registry, ns) from None
    names: dict[str, None] = {}
    for page in pages:
        for name in parse_github_packages(page.url, page.body):
            if not prefix or name == prefix or name.startswith(prefix + "/"):
                names[name] = None

    async def one(name: str) -> DiscoveredRepo:
        versions = f"{api}/{kind}/{quote(owner, safe='')}/packages/container/{quote(name, safe='')}/versions"
        tags: dict[str, TagInfo] = {}
        for page in await lister.link_pages(f"{versions}?per_page={PER_PAGE}"):
            for tag, info in parse_github_versions(page.url, page.body).items():
                tags.setdefault(tag, info)  # newest first: a tag seen again (moved while paging) keeps the first
        return DiscoveredRepo(f"{owner}/{name}", sorted_tags(tags))

    return await gather(one(name) for name in names)


def _packages_url(api: str, kind: str, owner: str) -> str:
    return f"{api}/{kind}/{quote(owner, safe='')}/packages?package_type=container&per_page={PER_PAGE}"


def _explained(exc: AuthError, registry: str, ns: str) -> AuthError:
    return AuthError(f"listing {registry}/{ns} through the GitHub packages API was refused: {exc}; check the "
                     f"token of {registry} (it needs read:packages)", status=exc.status)
