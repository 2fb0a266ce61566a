"""Namespace discovery: which repositories and tags a source namespace holds.

One strategy per registry family, because `_catalog` is unusable on the public registries we mirror
from (gcr.io lists every project or nothing, registry.k8s.io answers 404, Docker Hub 401, quay.io an
empty list to anonymous clients, ghcr.io 404): GCR/Artifact Registry's recursive `tags/list` extension,
the Docker Hub, Quay and GitHub packages web APIs, the OCI `_catalog`, or an explicit repository list.

Any failure - HTTP error, malformed body, a pagination link to another host - fails the whole namespace.
An empty or partial answer is never taken for "no images", since that is how the original gcrsync came
to skip or re-push whole repositories.
"""

from __future__ import annotations

from typing import Literal

from gcrsync.errors import ConfigError, InvalidReference
from gcrsync.reference import validate_registry
from gcrsync.registry.auth import ApiLogin
from gcrsync.registry.discovery.catalog import list_catalog, list_given
from gcrsync.registry.discovery.dockerhub import list_dockerhub, login_url
from gcrsync.registry.discovery.gcr import list_gcr
from gcrsync.registry.discovery.ghcr import list_ghcr
from gcrsync.registry.discovery.quay import list_quay
from gcrsync.registry.listing_parsers import DiscoveryError, is_valid_repository
from gcrsync.registry.pages import MAX_PAGES, JsonFetcher, JsonPage, Lister
from gcrsync.types import DiscoveredRepo, TagInfo

__all__ = [
    "MAX_PAGES",
    "ApiLogin",
    "DiscoveredRepo",
    "DiscoveryError",
    "JsonFetcher",
    "JsonPage",
    "Method",
    "TagInfo",
    "default_method",
    "discover",
]

Method = Literal["auto", "gcr", "catalog", "dockerhub", "quay", "ghcr", "list"]
# The public services' APIs (GitHub Enterprise: its own, through `registries: <host>: api:`).
DEFAULT_APIS = {"dockerhub": "https://hub.docker.com", "quay": "https://quay.io", "ghcr": "https://api.github.com"}
_METHODS = frozenset({"auto", "gcr", "catalog", "dockerhub", "quay", "ghcr", "list"})


def default_method(host: str) -> str:
    """The discovery method that works on a registry host without configuration."""
    name = host.lower().rstrip("/").rsplit(":", 1)[0] if not host.startswith("[") else host.lower()
    if name in ("gcr.io", "registry.k8s.io") or name.endswith((".gcr.io", "-docker.pkg.dev")):
        return "gcr"
    if name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return "dockerhub"
    if name == "quay.io":
        return "quay"
    if name == "ghcr.io":
        return "ghcr"
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
    api: str | None = None,
    authenticated: bool = False,
) -> list[DiscoveredRepo]:
    """List every repository (full registry path) under namespace with its tags, sorted by repository.

    `api`: the web API base of methods that use one (Docker Hub, quay, GitHub), else that method's public
    default. `authenticated`: credentials for that API are known and the fetcher uses them (see
    `ApiLogin`); without them a listing says what it cannot see and works around anonymous limits.
    """
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
    lister = Lister(fetcher, f"{scheme}://{registry_host}", ns, query_jobs)
    api_base = (api or DEFAULT_APIS.get(chosen, "")).rstrip("/")
    if chosen == "gcr":
        found = await list_gcr(lister)
    elif chosen == "catalog":
        found = await list_catalog(lister)
    elif chosen == "dockerhub":
        found = await list_dockerhub(lister, api_base, authenticated=authenticated,
                                     registry="docker.io" if registry_host == "registry-1.docker.io" else registry_host)
    elif chosen == "quay":
        found = await list_quay(lister, api_base, authenticated=authenticated)
    elif chosen == "ghcr":
        found = await list_ghcr(lister, api_base, authenticated=authenticated)
    else:
        if repositories is None:
            raise ConfigError(f"discovery method 'list' needs a repository list for namespace {namespace!r}")
        found = await list_given(lister, repositories)
    return sorted(found, key=lambda repo: repo.repository)


def api_login(method: str, registry: str, api: str) -> ApiLogin | None:
    """How the web API of a discovery method authenticates with the registry's credentials (None: it
    takes none, or only anonymous requests are made)."""
    if method == "dockerhub":
        return ApiLogin(registry, login_url(api.rstrip("/")))
    if method == "ghcr":
        return ApiLogin(registry)  # the registry's password (a GitHub token) is the API's bearer token
    return None


def uses_registry_credentials(method: str) -> bool:
    """Methods that list more with the registry's own credentials (quay: `_catalog` as a robot account)."""
    return method == "quay"


def chosen_method(registry: str, method: str) -> str:
    return default_method(registry) if method == "auto" else method
