"""quay.io in front of a real distribution registry.

Behaviour and sources (see also ../shared/research/registries.md):
- `GET /api/v1/repository?namespace=<ns>&public=true`: `{"repositories": [...], "next_page": <opaque
  token>}` (quay/quay `endpoints/api/repository.py`; the token is encrypted, so here it is random-looking).
- `GET /api/v1/repository/<ns>/<repo>/tag/?onlyActiveTags=true&limit=N&page=P`: `{"tags", "page",
  "has_additional"}`, a tag with `name, reversion, manifest_digest, is_manifest_list, start_ts,
  last_modified` (RFC 2822), `size`, `expiration`, and for manifest lists `is_sparse`,
  `child_manifest_count` (quay/quay `endpoints/api/tag.py` `_tag_dict`). Offset pages, newest first
  (`data/model/oci/tag.py`), limit at most 100: a tag deleted during the walk shifts the later pages, so
  one tag is skipped. `on_v1_page` lets a test delete a tag between two pages to reproduce exactly that.
- `/v2/<repo>/tags/list`: cursor pages (`Link: <…?n=…&last=…>; rel="next"`), `n` capped at
  `v2_page_size` as quay caps it; served here from the real registry's tags (distribution 2.8 does not
  page tags/list).
- `/v2/`: 401 with a Bearer challenge to anonymous clients (realm `/v2/auth`), else 200 `true` (quay/quay
  `endpoints/v2/__init__.py` `v2_support_enabled`); `/v2/auth` gives tokens,
  to robot accounts (Basic `robot$name:token`) and anonymously.
- `/v2/_catalog`: anonymous → `{"repositories": []}`; with robot credentials (a token from `/v2/auth` or
  Basic) the repositories the robot can read, paged with `Link` and an opaque `next_page`
  (quay/quay `endpoints/v2/catalog.py`).
- Error bodies of the v1 API: `{"detail", "error_message", "error_type", "title", "type", "status"}`
  (quay/quay `endpoints/exception.py` `ApiException.to_dict`).
- Sparse manifest lists (quay's mirror repositories with an architecture filter): the index references
  children that were never stored (GET → 404); `make_sparse_index` builds one by deleting children.

Everything else (manifests, blobs) is the real registry's answer. Public repositories are pullable
anonymously; `private` repositories are only hidden from anonymous listings.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from aiohttp import web
from tools.imagefactory import RegistryPusher, manifest_digest, push_index

from harness import RegistryServer
from personalities.base import Personality, RegistryReader, catch_all, relay

_LIST_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


class QuayPersonality(Personality):
    def __init__(self, backend: RegistryServer, *, v1_page_size: int = 100, v2_page_size: int = 100,
                 repo_page_size: int = 100, robots: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.v1_page_size = v1_page_size
        self.v2_page_size = v2_page_size
        self.repo_page_size = repo_page_size
        self.robots = dict(robots or {})  # "ns+name" → password (quay robot accounts are "namespace+name")
        self.private: set[str] = set()  # repositories ("ns/repo") hidden from anonymous listings
        self.start_ts: dict[tuple[str, str], int] = {}  # (repo, tag) → push time; default: order of first sight
        self.on_v1_page: Callable[[str, int], None] | None = None  # called after serving v1 tag page P of repo
        self.v1_errors: dict[str, tuple[int, str]] = {}  # repo → (status, message) its v1 tag API answers
        self.seen: list[tuple[str, str, str | None]] = []  # method, path_qs, Authorization
        self._tokens: dict[str, str | None] = {}  # issued token → robot name (None: anonymous)
        self._pages: dict[str, int] = {}  # opaque next_page token → offset
        self._clock = 1_700_000_000
        super().__init__(catch_all(self._handle), "quay")
        self.reader = RegistryReader(backend.url, lambda: self.session)

    # -- dispatch ---------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        path = request.path
        if path.startswith("/api/v1/"):
            return await self._api(request)
        if path == "/v2/auth":
            return self._token(request)
        if path == "/v2/":
            if self._robot(request) is None and not self._anonymous_token(request):
                return self._challenge()
            return web.Response(text="true", content_type="application/json")  # quay's v2_support_enabled
        if path == "/v2/_catalog":
            return await self._catalog(request)
        if path.startswith("/v2/") and path.endswith("/tags/list"):
            return await self._tags_list(request, path[4:-10])
        return await relay(request, self.session, self.backend.url + request.path_qs)

    def _challenge(self) -> web.Response:
        header = f'Bearer realm="{self.url}/v2/auth",service="{self.host}"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "access to the requested "
                                              "resource is not authorized", "detail": {}}]},
                                 status=401, headers={"WWW-Authenticate": header})

    # -- auth -------------------------------------------------------------------------------------------
    def _basic_robot(self, header: str) -> str | None:
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.robots.get(user) == password else None

    def _robot(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return self._tokens.get(header[7:])
        return self._basic_robot(header)

    def _anonymous_token(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header.lower().startswith("bearer ") and header[7:] in self._tokens

    def _token(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        robot = self._basic_robot(header)
        if header and robot is None:
            return web.json_response({"error": "Invalid Username or Password"}, status=401)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = robot
        return web.json_response({"token": token, "expires_in": 3600})

    async def _tags_list(self, request: web.Request, repo: str) -> web.Response:
        """Cursor pages in lexical order (`last` is the previous page's last tag), so a deletion never
        shifts a tag out of the walk. (distribution 2.8 does not page tags/list itself.)"""
        tags = await self.reader.tags_if_present(repo)
        if tags is None:
            return web.json_response({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known "
                                                  "to registry", "detail": {"name": repo}}]}, status=404)
        limit = min(int(request.query.get("n") or self.v2_page_size), self.v2_page_size)
        last = request.query.get("last", "")
        after = [t for t in sorted(tags) if t > last]
        page = after[:limit]
        headers = {}
        if len(after) > limit:
            headers["Link"] = f'</v2/{repo}/tags/list?n={limit}&last={page[-1]}>; rel="next"'
        return web.json_response({"name": repo, "tags": page}, headers=headers)

    # -- v2 catalog ---------------------------------------------------------------------------------------
    async def _catalog(self, request: web.Request) -> web.Response:
        robot = self._robot(request)
        if robot is None:
            return web.json_response({"repositories": []})  # anonymous: quay.io shows nothing
        names = await self.reader.repositories()
        namespace = robot.split("+", 1)[0]
        visible = [n for n in names if n.startswith(namespace + "/")]
        limit = min(int(request.query.get("n") or 100), 100)
        start = self._pages.pop(request.query.get("next_page", ""), 0) if "next_page" in request.query else 0
        page = visible[start:start + limit]
        headers = {}
        if start + limit < len(visible):
            token = self._page_token(start + limit)
            headers["Link"] = f'</v2/_catalog?n={limit}&next_page={token}>; rel="next"'
        return web.json_response({"repositories": page}, headers=headers)

    def _page_token(self, offset: int) -> str:
        token = "gAAAAAB" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
        self._pages[token] = offset
        return token

    # -- v1 API -------------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        parts = request.path.split("/")  # ["", "api", "v1", "repository", ns, repo…, "tag", ""]
        if request.path == "/api/v1/repository":
            return await self._repositories(request)
        if len(parts) >= 7 and parts[3] == "repository" and parts[-2] == "tag" and parts[-1] == "":
            repo = "/".join(parts[4:-2])
            return await self._tags(request, repo)
        return _error(404, "Not Found")

    async def _repositories(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace", "")
        names = [n for n in await self.reader.repositories()
                 if n.startswith(ns + "/") and n not in self.private]
        start = 0
        if "next_page" in request.query:
            if request.query["next_page"] not in self._pages:
                return _error(400, "Invalid page token")
            start = self._pages[request.query["next_page"]]
        page = names[start:start + self.repo_page_size]
        body: dict[str, Any] = {"repositories": [
            {"namespace": ns, "name": n[len(ns) + 1:], "description": None, "is_public": True, "kind": "image",
             "state": "NORMAL", "is_starred": False} for n in page]}
        if start + self.repo_page_size < len(names):
            body["next_page"] = self._page_token(start + self.repo_page_size)
        return web.json_response(body)

    async def _tags(self, request: web.Request, repo: str) -> web.Response:
        if repo in self.v1_errors:
            return _error(*self.v1_errors[repo])
        if repo in self.private or repo not in await self.reader.repositories():
            return _error(404, "Not Found")
        limit = min(int(request.query.get("limit") or 50), 100, self.v1_page_size)
        page = int(request.query.get("page") or 1)
        tags = await self._tag_dicts(repo)
        tags.sort(key=lambda t: (-t["start_ts"], t["name"]))  # newest first, as quay orders them
        chunk = tags[(page - 1) * limit:page * limit]
        body = {"tags": chunk, "page": page, "has_additional": page * limit < len(tags)}
        if self.on_v1_page is not None:
            self.on_v1_page(repo, page)
        return web.json_response(body)

    async def _tag_dicts(self, repo: str) -> list[dict[str, Any]]:
        out = []
        for tag in await self.reader.tags_if_present(repo) or []:
            raw, media_type = await self.reader.manifest_raw(repo, tag)
            if raw is None:
                continue  # deleted since the listing
            ts = self.start_ts.setdefault((repo, tag), self._next_ts())
            doc = json.loads(raw)
            entry: dict[str, Any] = {
                "name": tag, "reversion": False, "start_ts": ts, "last_modified": formatdate(ts, usegmt=True),
                "manifest_digest": manifest_digest(raw), "is_manifest_list": media_type in _LIST_TYPES,
                "expiration": None,
            }
            if media_type in _LIST_TYPES:
                children = [m["digest"] for m in doc.get("manifests", [])]
                present = [c for c in children if (await self.reader.manifest_raw(repo, c))[0] is not None]
                entry.update(size=None, child_manifest_count=len(children), is_sparse=len(present) < len(children))
            else:
                entry["size"] = sum(layer.get("size", 0) for layer in doc.get("layers", []))
            out.append(entry)
        return out

    def _next_ts(self) -> int:
        self._clock += 60
        return self._clock

    # -- the real registry ----------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request", 401: "invalid_token", 403: "insufficient_scope", 404: "not_found"}[status]
    return web.json_response({"detail": message, "error_message": message, "error_type": kind,
                              "title": kind, "type": f"https://quay.io/api/v1/error/{kind}", "status": status},
                             status=status)


def make_sparse_index(pusher: RegistryPusher, repo: str, tag: str, *, absent: list[int], seed: int,
                      platforms: list[tuple[str, str, str | None]] | None = None) -> tuple[str, list[str], list[str]]:
    """Push a manifest list, then delete the children at the `absent` positions: what a quay mirror
    repository with an architecture filter holds. Returns (index digest, present, absent child digests)."""
    plats = platforms or [("linux", "amd64", None), ("linux", "arm64", None), ("linux", "s390x", None)]
    digest = push_index(pusher, repo, tag, plats, 1_000, seed=seed)
    raw, _ = pusher.get_manifest(repo, digest)
    children = [m["digest"] for m in json.loads(raw)["manifests"]]
    gone = [children[i] for i in absent]
    for child in gone:
        pusher.delete_manifest(repo, child)
    return digest, [c for c in children if c not in gone], gone
