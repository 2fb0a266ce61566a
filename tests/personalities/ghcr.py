"""ghcr.io in front of a real distribution registry, and the GitHub packages REST API beside it.

Behaviour and sources (see also ../shared/research/registries.md):
- The registry serves no `_catalog` (GitHub staff in microsoft/vscode-docker#1525; oras-project/oras-go#621):
  404 here. It answers every /v2/ request without a token with a Bearer challenge (realm `/token`, as
  ghcr.io's `https://ghcr.io/token`); the token endpoint gives anonymous tokens (public packages) and, for
  Basic credentials whose password is a known GitHub token, the account's. Everything else under /v2/ is the
  real registry's answer.
- GitHub REST (docs.github.com/rest/packages/packages): `GET /orgs/{org}/packages?package_type=container`,
  `GET /users/{user}/packages?…`, `GET /orgs/{org}/packages/container/{name}/versions` (and `/users/…`):
  JSON arrays; a version is `{id, name: <manifest digest>, url, package_html_url, created_at, updated_at,
  html_url, metadata: {package_type: "container", container: {tags: [...]}}}`, newest first; the children of
  a multi-platform image are untagged versions of their own.
- Every call needs `Authorization: Bearer <token>` (or `token <token>`): without one 401
  `{"message": "Requires authentication", "documentation_url": …}`; an unknown token 401
  `{"message": "Bad credentials", …}` (docs.github.com/rest/overview/authenticating-to-the-rest-api).
- A package name containing `/` must be sent as `%2F` in the path (a raw `/` is another path: 404).
- Pages: `per_page` (default 30, at most 100) and `page`, with `Link: <…>; rel="next", <…>; rel="last"`
  (docs.github.com/rest/using-the-rest-api/using-pagination-in-the-rest-api); an organization's package
  list links to `/organizations/{id}/packages…`, as api.github.com does. `x-ratelimit-limit`,
  `-remaining`, `-used`, `-reset`, `-resource` headers on every answer
  (docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api).
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import quote, unquote, urlencode

from aiohttp import web
from tools.imagefactory import manifest_digest

from harness import RegistryServer
from personalities.base import RegistryReader, ThreadedApp, catch_all, relay

_LIST_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


class GhcrPersonality:
    def __init__(self, backend: RegistryServer, *, tokens: set[str], orgs: frozenset[str] | set[str] = frozenset(),
                 max_per_page: int = 100) -> None:
        self.backend = backend
        self.tokens = set(tokens)
        self.orgs = set(orgs)  # owners that are organizations; any other owner is a user
        self.max_per_page = max_per_page
        self.api_seen: list[tuple[str, str | None]] = []  # raw path+query, Authorization
        self.registry_seen: list[tuple[str, str]] = []  # method, path_qs
        self.token_logins: list[str | None] = []  # the GitHub token each registry token was issued for
        self._registry_tokens: set[str] = set()
        self.remaining = 5000
        self.registry = ThreadedApp(catch_all(self._registry), "ghcr-registry")
        self.api = ThreadedApp(catch_all(self._api), "ghcr-api")

    def _reader(self) -> RegistryReader:
        assert self.api.session is not None
        session = self.api.session
        return RegistryReader(self.backend.url, lambda: session)

    def __enter__(self) -> GhcrPersonality:
        self.registry.start()
        self.api.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.stop()
        self.registry.stop()

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def api_url(self) -> str:
        return self.api.url

    # -- the registry -------------------------------------------------------------------------------------
    async def _registry(self, request: web.Request) -> web.StreamResponse:
        self.registry_seen.append((request.method, request.path_qs))
        if request.path == "/token":
            return self._registry_token(request)
        auth = request.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in self._registry_tokens):
            challenge = f'Bearer realm="{self.registry.url}/token",service="ghcr.io"'
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                     status=401, headers={"WWW-Authenticate": challenge})
        if request.path == "/v2/_catalog":
            return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}, status=404)
        assert self.registry.session is not None  # the registry app's own loop and session
        return await relay(request, self.registry.session, self.backend.url + request.path_qs)

    def _registry_token(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        github_token = None
        if auth.lower().startswith("basic "):
            github_token = base64.b64decode(auth[6:]).decode().partition(":")[2]
            if github_token not in self.tokens:
                return web.json_response({"errors": [{"code": "DENIED", "message": "denied"}]}, status=403)
        token = secrets.token_urlsafe(16)
        self._registry_tokens.add(token)
        self.token_logins.append(github_token)
        return web.json_response({"token": token})

    # -- the REST API ----------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.api_seen.append((request.raw_path, auth))
        self.remaining -= 1
        if auth is None:
            return self._json({"message": "Requires authentication",
                               "documentation_url": "https://docs.github.com/rest/packages/packages"}, 401)
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self.tokens:
            return self._json({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                              401)
        # Route on the raw path: '%2F' inside a package name is part of one segment.
        raw = request.raw_path.split("?", 1)[0]
        segments = [unquote(s) for s in raw.strip("/").split("/")]
        match segments:
            case ["orgs", owner, "packages"] if owner in self.orgs:
                return await self._packages(request, owner, f"/organizations/{self._org_id(owner)}/packages")
            case ["organizations", org_id, "packages"] if self._org_name(org_id) is not None:
                owner = self._org_name(org_id)
                assert owner is not None
                return await self._packages(request, owner, raw)
            case ["users", owner, "packages"] if owner not in self.orgs:
                return await self._packages(request, owner, raw)
            case [("orgs" | "users") as kind, owner, "packages", "container", name, "versions"] if (
                    (kind == "orgs") == (owner in self.orgs)):
                return await self._versions(request, owner, name, raw)
        return self._json({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)

    def _org_id(self, owner: str) -> int:
        return 1000 + sorted(self.orgs).index(owner)

    def _org_name(self, org_id: str) -> str | None:
        for owner in self.orgs:
            if str(self._org_id(owner)) == org_id:
                return owner
        return None

    async def _packages(self, request: web.Request, owner: str, link_path: str) -> web.Response:
        if request.query.get("package_type") != "container":
            return self._json({"message": "Invalid package_type", "documentation_url": "https://docs.github.com"},
                              400)
        names = sorted({r[len(owner) + 1:] for r in await self._reader().repositories() if r.startswith(owner + "/")})
        items = [{"id": 5000 + i, "name": n, "package_type": "container", "visibility": "public",
                  "url": f"{self.api_url}/orgs/{owner}/packages/container/{quote(n, safe='')}",
                  "owner": {"login": owner}} for i, n in enumerate(names)]
        return self._page(request, items, link_path)

    async def _versions(self, request: web.Request, owner: str, name: str, raw_path: str) -> web.Response:
        repo = f"{owner}/{name}"
        tags = await self._reader().tags_if_present(repo)
        if tags is None:
            return self._json({"message": "Package not found.", "documentation_url": "https://docs.github.com"},
                              404)
        by_digest: dict[str, list[str]] = {}
        children: list[str] = []
        for tag in tags:
            raw, media_type = await self._reader().manifest_raw(repo, tag)
            if raw is None:
                continue
            by_digest.setdefault(manifest_digest(raw), []).append(tag)
            if media_type in _LIST_TYPES:
                children.extend(m["digest"] for m in json.loads(raw).get("manifests", []))
        versions: list[dict[str, Any]] = []
        # Newest first: the tagged versions in reverse tag order, then the untagged platform children.
        for n, (digest, names) in enumerate(sorted(by_digest.items(), key=lambda p: max(p[1]), reverse=True)):
            versions.append(self._version(owner, name, 9000 + n, digest, sorted(names)))
        for n, digest in enumerate(c for c in dict.fromkeys(children) if c not in by_digest):
            versions.append(self._version(owner, name, 8000 + n, digest, []))
        return self._page(request, versions, raw_path)

    def _version(self, owner: str, name: str, vid: int, digest: str, tags: list[str]) -> dict[str, Any]:
        when = f"2026-11-{1 + vid % 28:02d}T12:00:00Z"
        return {"id": vid, "name": digest, "url": f"{self.api_url}/orgs/{owner}/packages/container/"
                f"{quote(name, safe='')}/versions/{vid}", "package_html_url": f"https://github.com/{owner}",
                "created_at": when, "updated_at": when, "html_url": f"https://github.com/{owner}",
                "metadata": {"package_type": "container", "container": {"tags": tags}}}

    def _page(self, request: web.Request, items: list[dict[str, Any]], link_path: str) -> web.Response:
        per_page = min(int(request.query.get("per_page") or 30), 100, self.max_per_page)
        page = int(request.query.get("page") or 1)
        last = max(1, -(-len(items) // per_page))
        query = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            return f"{self.api_url}{link_path}?" + urlencode({**query, "per_page": per_page, "page": n})

        links = []
        if page < last:
            links += [f'<{link(page + 1)}>; rel="next"', f'<{link(last)}>; rel="last"']
        if page > 1:
            links += [f'<{link(page - 1)}>; rel="prev"', f'<{link(1)}>; rel="first"']
        headers = {"Link": ", ".join(links)} if links else {}
        return self._json(items[(page - 1) * per_page:page * per_page], 200, headers)

    def _json(self, body: object, status: int, headers: dict[str, str] | None = None) -> web.Response:
        limits = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(max(self.remaining, 0)),
                  "x-ratelimit-used": str(5000 - max(self.remaining, 0)), "x-ratelimit-reset": "1900000000",
                  "x-ratelimit-resource": "core"}
        return web.json_response(body, status=status, headers={**limits, **(headers or {})})

    # -- the real registry ----------------------------------------------------------------------------------
