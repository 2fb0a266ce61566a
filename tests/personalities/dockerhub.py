"""Docker Hub's web API (hub.docker.com) over the namespaces of a real local registry.

Behaviour reproduced, with sources (see ../shared/research/registries.md):
- `GET /v2/namespaces/{ns}/repositories` and `/v2/namespaces/{ns}/repositories/{repo}/tags`, `page` and
  `page_size` (at most 100), `{count, next (absolute URL), previous, results}`; a tag's `digest` is the
  index digest, `images[]` the platforms; `last_updated`, `tag_last_pushed` (docs.docker.com Hub API
  reference, "List repository tags").
- Since 2026-08-11 anonymous requests past offset 1000 get `403 {"message": "pagination offset too large
  for anonymous requests; sign in to page further"}` (dotCMS/core#37025, goharbor/harbor#23819).
- Without auth, private repositories are left out silently (Hub API docs).
- `POST /v2/auth/token` with `{"identifier", "secret"}` → `{"access_token"}`, about 10 minutes
  (docs.docker.com AuthCreateAccessToken); errors are `{"detail"}` / `{"message"}` bodies, not OCI `errors[]`.
- `x-ratelimit-limit` / `x-ratelimit-remaining` / `x-ratelimit-reset` on API answers.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from aiohttp import web

from personalities.base import Personality, RegistryReader

ANONYMOUS_OFFSET_CAP = 1000
MAX_PAGE_SIZE = 100
CAP_MESSAGE = "pagination offset too large for anonymous requests; sign in to page further"
PUSHED = "2026-10-01T12:00:00.123456789Z"  # nine fractional digits, as the Hub sends


class DockerHubApi(Personality):
    def __init__(self, registry_url: str, *, users: dict[str, str] | None = None,
                 private: set[str] | None = None, token_uses: int | None = None) -> None:
        self.users = dict(users or {})  # identifier → secret (password or personal access token)
        self.private = set(private or ())  # "ns/repo" visible only to authenticated calls
        self.token_uses = token_uses  # a token expires after this many uses (expiry without waiting)
        self.tokens: dict[str, int] = {}  # issued token → uses left (None: unlimited)
        self.stats: Counter[str] = Counter()
        app = web.Application()
        app.router.add_post("/v2/auth/token", self._login)
        app.router.add_get("/v2/namespaces/{ns}/repositories", self._repositories)
        app.router.add_get("/v2/namespaces/{ns}/repositories/{repo}/tags", self._tags)
        super().__init__(app, "hub-api")
        self.reader = RegistryReader(registry_url, lambda: self.session)

    # -- auth ------------------------------------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.Response:
        self.stats["login"] += 1
        try:
            doc = await request.json()
        except ValueError:
            return web.json_response({"message": "invalid JSON body"}, status=400)
        if self.users.get(str(doc.get("identifier"))) != doc.get("secret") or not doc.get("secret"):
            return web.json_response({"detail": "Incorrect authentication credentials."}, status=401)
        token = "hub-" + secrets.token_hex(16)
        self.tokens[token] = self.token_uses if self.token_uses is not None else -1
        return web.json_response({"access_token": token})

    def _authenticated(self, request: web.Request) -> bool | web.Response:
        header = request.headers.get("Authorization", "")
        if not header:
            return False
        token = header.removeprefix("Bearer ").strip()
        left = self.tokens.get(token)
        if left is None or left == 0:
            self.stats["expired"] += 1
            return web.json_response({"detail": "Given token not valid for any token type"}, status=401)
        if left > 0:
            self.tokens[token] = left - 1
        return True

    # -- listings ----------------------------------------------------------------------------------------
    def _page(self, request: web.Request) -> tuple[int, int] | web.Response:
        try:
            page = int(request.query.get("page", "1"))
            size = int(request.query.get("page_size", "10"))
        except ValueError:
            return web.json_response({"message": "page and page_size must be integers"}, status=400)
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return web.json_response({"message": f"page_size must be between 1 and {MAX_PAGE_SIZE}"}, status=400)
        return page, size

    def _answer(self, request: web.Request, items: list[dict[str, Any]], page: int, size: int,
                auth: bool) -> web.Response:
        offset = (page - 1) * size
        if not auth and offset >= ANONYMOUS_OFFSET_CAP:
            self.stats["anonymous-cap"] += 1
            return web.json_response({"message": CAP_MESSAGE, "errinfo": {}}, status=403)
        chunk = items[offset:offset + size]
        more = offset + size < len(items)
        base = f"{self.url}{request.path}"
        doc = {
            "count": len(items),
            "next": f"{base}?page={page + 1}&page_size={size}" if more else None,
            "previous": f"{base}?page={page - 1}&page_size={size}" if page > 1 else None,
            "results": chunk,
        }
        headers = {"x-ratelimit-limit": "180", "x-ratelimit-remaining": "179", "x-ratelimit-reset": "1"}
        return web.json_response(doc, headers=headers)

    def _listing_request(self, request: web.Request, what: str) -> tuple[bool, int, int] | web.Response:
        """(authenticated, page, page size) of a listing call, or the API's refusal."""
        self.stats[what] += 1
        auth = self._authenticated(request)
        if isinstance(auth, web.Response):
            return auth
        paging = self._page(request)
        return paging if isinstance(paging, web.Response) else (auth, *paging)

    async def _repositories(self, request: web.Request) -> web.Response:
        asked = self._listing_request(request, "repositories")
        if isinstance(asked, web.Response):
            return asked
        auth, page, size = asked
        ns = request.match_info["ns"]
        names = sorted(r.split("/", 1)[1] for r in await self.reader.repositories()
                       if r.startswith(ns + "/") and r.count("/") == 1 and (auth or r not in self.private))
        items = [{"name": n, "namespace": ns, "repository_type": "image", "is_private": f"{ns}/{n}" in self.private}
                 for n in names]
        return self._answer(request, items, page, size, auth)

    async def _tags(self, request: web.Request) -> web.Response:
        asked = self._listing_request(request, "tags")
        if isinstance(asked, web.Response):
            return asked
        auth, page, size = asked
        repo = f"{request.match_info['ns']}/{request.match_info['repo']}"
        if repo in self.private and not auth:
            return web.json_response({"message": "object not found", "errinfo": {}}, status=404)
        offset = (page - 1) * size
        tags = await self.reader.tags(repo)
        window = tags[offset:offset + size]
        records = {r.tag: r for r in await self.reader.tag_records(repo, window)}
        items: list[dict[str, Any]] = [{"name": t} for t in tags]
        for item in items[offset:offset + size]:
            record = records.get(item["name"])
            if record is not None:
                item.update(digest=record.digest, media_type=record.media_type, full_size=record.size,
                            last_updated=PUSHED, tag_last_pushed=PUSHED, images=[])
        return self._answer(request, items, page, size, auth)
