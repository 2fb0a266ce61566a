"""Redirects for GET and HEAD (registry.k8s.io → Artifact Registry, blobs → CDNs and S3), with per-hop auth.

Each hop goes through the auth layer on its own host's terms: the request's scopes (and any Authorization)
belong to the origin it was made for and are never sent to another; a host that challenges on its own
(Artifact Registry behind registry.k8s.io) gets a token for the scope its challenge names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from yarl import URL

from gcrsync.errors import RegistryError
from gcrsync.registry.auth import without_authorization
from gcrsync.registry.request import Request, Response, Sender, redact_url

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Redirecting:
    def __init__(self, inner: Sender) -> None:
        self.inner = inner

    @asynccontextmanager
    async def send(self, request: Request) -> AsyncIterator[Response]:
        if request.method not in ("GET", "HEAD") or not request.follow_redirects:
            async with self.inner.send(request) as resp:
                yield resp
            return
        origin = request.url.origin()
        hop = request
        async with AsyncExitStack() as stack:
            for _hop in range(MAX_REDIRECTS + 1):
                resp = await stack.enter_async_context(self.inner.send(hop))
                location = resp.headers.get("Location") if resp.status in REDIRECT_STATUSES else None
                if location is None:
                    break
                await stack.aclose()
                try:
                    url = hop.url.join(URL(location, encoded=True))
                except ValueError:
                    raise RegistryError(f"{hop}: redirect to an unusable location") from None
                if url.origin() == origin:
                    hop = replace(request, url=url)
                else:
                    hop = replace(without_authorization(request), url=url, scopes=frozenset())
            else:
                raise RegistryError(f"{request.method} {redact_url(hop.url)}: too many redirects")
            yield resp
