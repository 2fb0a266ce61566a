"""An OCI 1.1 registry in front of distribution 2.8 (which has no referrers API).

opencontainers/distribution-spec v1.1 `spec.md`: `GET /v2/<name>/referrers/<digest>[?artifactType=]` answers
an OCI image index of every manifest whose `subject` is `<digest>` (entries carry `artifactType` — the
manifest's, else its config's media type — and the manifest's `annotations`), `OCI-Filters-Applied:
artifactType` when the filter was applied, `Link` paging; a PUT of a manifest with a `subject` is answered
with `OCI-Subject: <digest>`. The referrers are computed from the manifests pushed through this front
(with `native=False` it behaves like distribution 2.8: 404 and no `OCI-Subject`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from aiohttp import web
from tools.imagefactory import RegistryPusher

from personalities.base import Personality, relay

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class ReferrersRegistry(Personality):
    def __init__(self, registry_url: str, *, native: bool = True, page_size: int = 0) -> None:
        self.upstream = registry_url.rstrip("/")
        self.native = native
        self.broken = False  # answer referrers requests with 500 (a registry failing mid-run)
        self.page_size = page_size  # >0: referrers answers are paged with Link
        self.index: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # (repo, subject) → digest → entry
        self.stats: Counter[str] = Counter()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/v2/{path:.*}", self._handle)
        super().__init__(app, "referrers")

    def pusher(self) -> RegistryPusher:
        """Pushes through this front, so the referrers it serves include what the test pushes."""
        return RegistryPusher(self.url)

    def ref(self, repo: str, ref: str = "latest") -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"docker://{self.host}/{repo}{sep}{ref}"

    def referrers_of(self, repo: str, subject: str) -> set[str]:
        return set(self.index.get((repo, subject), {}))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if "/referrers/" in path and request.method == "GET":
            self.stats["referrers"] += 1
            if self.broken:
                return web.json_response({"errors": [{"code": "UNKNOWN", "message": "backend down"}]}, status=500)
            if not self.native:
                return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}, status=404)
            repo, _, subject = path.partition("/referrers/")
            return self._referrers(request, repo, subject)
        if "/manifests/" in path and request.method == "PUT":
            return await self._put_manifest(request, path)
        target = f"{self.upstream}/v2/{path}" + (f"?{request.query_string}" if request.query_string else "")
        return await relay(request, self.session, target, lambda v: v.replace(self.upstream, self.url))

    async def _put_manifest(self, request: web.Request, path: str) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with self.session.put(f"{self.upstream}/v2/{path}", data=body, headers=headers) as up:
            answer = await up.read()
            out = {k: v.replace(self.upstream, self.url) for k, v in up.headers.items()
                   if k.lower() in ("docker-content-digest", "location", "content-type")}
            status, digest = up.status, up.headers.get("Docker-Content-Digest", "")
        if status == 201:
            doc = json.loads(body)
            subject = (doc.get("subject") or {}).get("digest")
            if subject:
                repo = path.partition("/manifests/")[0]
                artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
                entry: dict[str, Any] = {"mediaType": doc.get("mediaType") or headers["Content-Type"],
                                         "digest": digest, "size": len(body)}
                if artifact_type:
                    entry["artifactType"] = artifact_type
                if doc.get("annotations"):
                    entry["annotations"] = doc["annotations"]
                if self.native:
                    self.index.setdefault((repo, subject), {})[digest] = entry
                    out["OCI-Subject"] = subject
        return web.Response(status=status, body=answer, headers=out)

    def _referrers(self, request: web.Request, repo: str, subject: str) -> web.Response:
        entries = sorted(self.index.get((repo, subject), {}).values(), key=lambda e: e["digest"])
        headers: dict[str, str] = {"Content-Type": OCI_INDEX}
        wanted = request.query.get("artifactType")
        if wanted:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(request.query.get("_page", "0"))
        if self.page_size:
            rest = entries[start + self.page_size:]
            entries = entries[start:start + self.page_size]
            if rest:
                query = f"_page={start + self.page_size}" + (f"&artifactType={wanted}" if wanted else "")
                headers["Link"] = f'</v2/{repo}/referrers/{subject}?{query}>; rel="next"'
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return web.Response(body=json.dumps(doc).encode(), headers=headers)
