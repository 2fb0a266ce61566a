"""Artifact Registry / gcr.io listings over a real local registry, and registry.k8s.io's front.

Artifact Registry (sources in ../shared/research/registries.md):
- `GET /v2/<path>/tags/list` answers the extended document: `name`, `tags`, `child` (sub-repositories),
  `manifest` keyed by digest with `tag` (empty for untagged manifests such as an index's children),
  `mediaType`, `imageSizeBytes`, `timeCreatedMs`, `timeUploadedMs` — numbers **as strings**
  (go-containerregistry pkg/v1/google/list.go rawManifestInfo; regclient types/tag/gcrlist.go).
- No pagination, and any list silently cut at 10,000 entries (cloud.google.com/artifact-registry/quotas;
  google/go-containerregistry#1643).
- Repositories live under a path prefix (`k8s-artifacts-prod/images/...`); manifests and blobs are relayed.

registry.k8s.io (kubernetes/registry.k8s.io cmd/archeio/internal/app/handlers.go): `/v2/` answers 200 itself,
`/v2/_catalog` is an explicit 404, every other path gets a 307 to the Artifact Registry host under the path
prefix, built from the path alone, so the query string (`n=`, `last=`) is dropped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from personalities.base import Personality, RegistryReader, relay

CAP = 10_000
UPLOADED_MS = "1727784000123"


class ArtifactRegistry(Personality):
    def __init__(self, registry_url: str, *, prefix: str = "", cap: int = CAP,
                 extra_tags: dict[str, int] | None = None) -> None:
        self.upstream = registry_url.rstrip("/")
        self.prefix = prefix.strip("/")
        self.cap = cap
        self.extra_tags = dict(extra_tags or {})  # repo → synthetic tag count (listing only), to reach the cap
        self.stats: Counter[str] = Counter()
        app = web.Application()
        app.router.add_route("*", "/v2/{path:.*}", self._handle)
        super().__init__(app, "artifact-registry")
        self.reader = RegistryReader(self.upstream, lambda: self.session)

    def _strip(self, path: str) -> str | None:
        if not self.prefix:
            return path
        if path == self.prefix:
            return ""
        return path[len(self.prefix) + 1:] if path.startswith(self.prefix + "/") else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.stats[f"{request.method} {'tags/list' if path.endswith('tags/list') else 'other'}"] += 1
        if path == "":
            return web.json_response({})
        if path.endswith("tags/list") and request.method == "GET":
            node = self._strip(path[: -len("tags/list")].rstrip("/"))
            if node is None:
                return _unknown(path)
            return web.json_response(await self._listing(node))
        inner = self._strip(path)
        if inner is None:
            return _unknown(path)
        target = f"{self.upstream}/v2/{inner}"
        if request.query_string:
            target += "?" + request.query_string
        return await relay(request, self.session, target, lambda v: v.replace(self.upstream, self.url))

    async def _listing(self, node: str) -> dict[str, Any]:
        repos = await self.reader.repositories()
        below = f"{node}/" if node else ""
        children = sorted({r[len(below):].split("/", 1)[0] for r in repos if r.startswith(below) and r != node})
        tags = await self.reader.tags(node) if node in repos else []
        manifest: dict[str, dict[str, Any]] = {}
        for record in await self.reader.tag_records(node, tags):
            entry = manifest.setdefault(record.digest, {
                "imageSizeBytes": str(record.size), "layerId": "", "mediaType": record.media_type, "tag": [],
                "timeCreatedMs": "0", "timeUploadedMs": UPLOADED_MS,
            })
            entry["tag"].append(record.tag)
            if record.media_type.endswith(("manifest.list.v2+json", "image.index.v1+json")):
                for child in (await self.reader.manifest(node, record.digest)).get("manifests", []):
                    manifest.setdefault(child["digest"], {
                        "imageSizeBytes": str(child.get("size", 0)), "layerId": "", "tag": [],
                        "mediaType": child.get("mediaType", ""), "timeCreatedMs": "0", "timeUploadedMs": UPLOADED_MS,
                    })
        extra = self.extra_tags.get(node, 0)
        if extra and manifest:
            first = next(iter(manifest.values()))
            first["tag"].extend(f"x{i:05d}" for i in range(extra))
            tags = tags + [f"x{i:05d}" for i in range(extra)]
        name = f"{self.prefix}/{node}".strip("/")
        # The silent cut: every list stops at the cap, and nothing says so.
        for entry in manifest.values():
            entry["tag"] = entry["tag"][: self.cap]
        return {"child": children[: self.cap], "manifest": dict(list(manifest.items())[: self.cap]),
                "name": name, "tags": sorted(tags)[: self.cap]}


def _unknown(path: str) -> web.Response:
    return web.json_response({"errors": [{"code": "NAME_UNKNOWN", "message": f"repository {path} not found"}]},
                             status=404)


class K8sFront(Personality):
    """registry.k8s.io's redirecting front. `redirect_query` (test-only) adds a query to every redirect, to
    make a backend page small so Link resolution after the redirect can be seen."""

    def __init__(self, upstream_url: str, *, prefix: str = "", redirect_query: str | None = None) -> None:
        self.upstream = upstream_url.rstrip("/")
        self.prefix = prefix.strip("/")
        self.redirect_query = redirect_query
        self.stats: Counter[str] = Counter()
        app = web.Application()
        app.router.add_route("*", "/v2/{path:.*}", self._handle)
        super().__init__(app, "k8s-front")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if path == "":
            self.stats["ping"] += 1
            return web.json_response({})
        if path == "_catalog":
            self.stats["catalog"] += 1
            return web.Response(status=404, text="404 page not found")
        self.stats["redirect"] += 1
        location = f"{self.upstream}/v2/{self.prefix + '/' if self.prefix else ''}{path}"
        if self.redirect_query:
            location += "?" + self.redirect_query
        raise web.HTTPTemporaryRedirect(location)
