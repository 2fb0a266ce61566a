"""The registry client: the whole transport stack behind one `send`, shared by every repository of a run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from yarl import URL

from gcrsync.errors import AuthError, RegistryError
from gcrsync.reference import validate_repository
from gcrsync.registry.auth import ApiLogin, Authenticating, Authenticator, pull_scope
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.errors import registry_error
from gcrsync.registry.redirects import Redirecting
from gcrsync.registry.repository import Repository
from gcrsync.registry.request import Request, Response, redact_url
from gcrsync.registry.resume import Resuming
from gcrsync.registry.stats import TransportStats
from gcrsync.registry.transport import Transport

if TYPE_CHECKING:  # discovery is imported when a namespace is listed: `gcrsync copy` never needs it
    from gcrsync.registry.discovery import DiscoveredRepo, Method
    from gcrsync.registry.pages import JsonPage

MAX_JSON_BYTES = 32 * 1024 * 1024  # listings of big namespaces are large, but not unbounded


class RegistryClient:
    """Talks to any number of registries through one Transport (the network layers) topped with auth,
    redirects and resumable bodies (see gcrsync.registry.transport for the whole stack)."""

    def __init__(
        self,
        transport: Transport,
        credentials: CredentialStore,
        *,
        chunked_hosts: Iterable[str] = (),
        chunk_size: int = 16 * 1024 * 1024,
        apis: Mapping[str, str] | None = None,
        methods: Mapping[str, str] | None = None,
    ) -> None:
        self.transport = transport
        self.auth = Authenticator(transport, credentials)
        self._stack = Resuming(Redirecting(Authenticating(transport, self.auth)), transport.options, transport.stats)
        self.chunked_hosts = set(chunked_hosts)  # hosts that refuse one big PUT: uploads go in PATCH chunks
        self.chunk_size = chunk_size
        self.referrers_api: dict[str, bool] = {}  # host → serves the referrers API (learned on first ask)
        self.referrers_probe: dict[str, asyncio.Lock] = {}
        self.apis = dict(apis or {})  # registry host → web API base of its discovery (config `api:`)
        self.methods = dict(methods or {})  # registry host → its discovery method (config `discovery:`)

    @property
    def stats(self) -> TransportStats:
        return self.transport.stats

    def repository(self, host: str, repository: str) -> Repository:
        return Repository(self, host, validate_repository(repository))

    def base(self, host: str) -> URL:
        api = "registry-1.docker.io" if host == "docker.io" else host
        return URL.build(scheme=self.transport.scheme_for(api), authority=api)

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        """The one entry point of every request gcrsync makes to a registry or a listing API."""
        async with self._stack.send(request) as resp:
            yield resp

    async def ping(self, host: str) -> None:
        """`GET /v2/` with whatever authentication the host asks for: a clear error if the registry is
        unreachable, not an OCI registry, or refuses the configured credentials.

        Runs do not need it: they learn each host's challenge from its first 401, which saves a request.
        """
        async with self.send(Request("GET", self.base(host) / "v2" / "")) as resp:
            if resp.status in (401, 403):
                raise AuthError(f"{host}: authentication failed (HTTP {resp.status})", status=resp.status)
            if resp.status != 200:
                raise RegistryError(f"{host} does not answer as an OCI registry (GET /v2/: HTTP {resp.status})",
                                    status=resp.status)
        if not self.auth.known_challenge(host):
            self.auth.learn(host, None)  # answered without a challenge: anonymous

    async def list_namespace(
        self,
        registry: str,
        namespace: str,
        method: Method = "auto",
        *,
        repositories: list[str] | None = None,
        query_jobs: int = 8,
    ) -> list[DiscoveredRepo]:
        """Discovery of one namespace through this client: the registry's web API from `apis` (or the
        public one), authenticated with the registry's credentials where they are known (Docker Hub: then
        private repositories are listed too; GitHub: the token is required; quay: `_catalog` as the
        robot account adds its private repositories)."""
        from gcrsync.registry.discovery import chosen_method, discover

        api_host = "registry-1.docker.io" if registry == "docker.io" else registry
        if method == "auto":
            method = self.method_for(registry)  # type: ignore[assignment]
        api, authenticated = await self.web_api(registry, chosen_method(registry, method))
        return await discover(
            self, api_host, namespace, method, repositories=repositories, query_jobs=query_jobs,
            scheme=self.transport.scheme_for(api_host), api=api, authenticated=authenticated,
        )

    def method_for(self, registry: str) -> str:
        """The discovery method of a registry host: configured (`discovery:`), else known by its name."""
        from gcrsync.registry.discovery import chosen_method

        return self.methods.get(registry) or chosen_method(registry, "auto")

    async def web_api(self, registry: str, method: str) -> tuple[str | None, bool]:
        """The web API base a method uses for `registry` (config `api:`, else the public one), and whether
        it is authenticated: the login is set up here when the registry's credentials are known."""
        from gcrsync.registry.discovery import DEFAULT_APIS, api_login, uses_registry_credentials

        api = self.apis.get(registry) or DEFAULT_APIS.get(method)
        if api is None:
            return None, False
        login = api_login(method, registry, api)
        if login is not None:
            cred = await self.auth.credentials.get(login.credential_host)
            authenticated = cred is not None and bool(cred.password)
            if authenticated:
                self.add_api_login(api, login)
            return api, authenticated
        if uses_registry_credentials(method):
            return api, await self.auth.credentials.get(registry) is not None
        return api, False

    def add_api_login(self, api_url: str, login: ApiLogin) -> None:
        """Authenticate the web API at api_url (Docker Hub, GitHub) with a registry's credentials."""
        self.auth.add_api_login(URL(api_url).authority, login)

    async def get_json(self, url: str) -> JsonPage:
        """GET a JSON document (listing APIs; implements discovery's JsonFetcher). Scopes are derived from
        registry API paths; the page remembers the URL that answered (after redirects)."""
        from gcrsync.registry.pages import JsonPage

        target = URL(url)
        scopes: set[str] = set()
        parts = target.path.split("/")
        if len(parts) > 2 and parts[1] == "v2":
            if parts[2] == "_catalog":
                scopes.add("registry:catalog:*")
            elif target.path.endswith("/tags/list"):
                scopes.add(pull_scope("/".join(parts[2:-2])))
        request = Request("GET", target, headers={"Accept": "application/json"}, scopes=frozenset(scopes))
        async with self.send(request) as resp:
            body = await resp.read(MAX_JSON_BYTES)
            if resp.status != 200:
                raise registry_error(f"GET {redact_url(target)}", resp.status, body)
            headers, answered = resp.headers, str(resp.url)
        try:
            return JsonPage(json.loads(body), headers, answered)
        except ValueError:
            raise RegistryError(f"GET {redact_url(target)}: response is not JSON") from None

__all__ = ["RegistryClient", "Repository"]
