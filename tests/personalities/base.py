"""A threaded aiohttp app on 127.0.0.1 (own loop, so sync tests, the CLI and async tests all reach it), and
helpers to read a real registry and to relay requests to it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "te", "trailer",
                  "proxy-authenticate", "proxy-authorization"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ThreadedApp:
    """Serve `app` on 127.0.0.1:<free port> from a daemon thread; `url`, `host`; start/stop or `with`.

    `session_options` tune the client session handlers use to reach the real registry; `on_stop` runs on
    the app's loop before it stops serving (the fault proxy ends its stalled requests there)."""

    def __init__(self, app: web.Application, name: str, *, session_options: dict[str, Any] | None = None,
                 on_stop: Callable[[], None] | None = None) -> None:
        self.app = app
        self.name = name
        self.url = ""
        self.host = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session_options = session_options or {}
        self._on_stop = on_stop
        self.session: aiohttp.ClientSession | None = None  # for handlers that read the real registry

    def start(self) -> ThreadedApp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound here, so no free-port race
        self.host = f"127.0.0.1:{sock.getsockname()[1]}"
        self.url = f"http://{self.host}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._astart(sock), self.loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    async def _astart(self, sock: socket.socket) -> None:
        options = {"auto_decompress": False, "cookie_jar": aiohttp.DummyCookieJar(), **self._session_options}
        self.session = aiohttp.ClientSession(**options)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        """Stop serving and close the loop. Idempotent."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self.loop = self._thread = None

    async def _astop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.session is not None:
            await self.session.close()

    def __enter__(self) -> ThreadedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def catch_all(handler: Handler) -> web.Application:
    """An app sending every path to one handler (a personality that routes by itself)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class Personality:
    """One behavioural fixture served by a ThreadedApp: `url`, `host`, `session`; start/stop or `with`."""

    def __init__(self, app: web.Application, name: str) -> None:
        self.server = ThreadedApp(app, name)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.server.session is not None, "start the fixture first"
        return self.server.session

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TagRecord:
    tag: str
    digest: str
    media_type: str
    size: int


class RegistryReader:
    """What a real (anonymous) registry holds, read over its API: repositories, tags, tag digests."""

    def __init__(self, upstream: str, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.upstream = upstream.rstrip("/")
        self._session = session

    async def _all(self, path: str, key: str) -> list[str]:
        """Every page of a Link-paged listing (distribution caps a page at 1000 entries)."""
        out: list[str] = []
        url: str | None = f"{self.upstream}{path}?n=1000"
        while url is not None:
            async with self._session().get(url) as r:
                if r.status == 404:
                    return []
                r.raise_for_status()
                out += (await r.json()).get(key) or []
                link = r.headers.get("Link")
            url = f"{self.upstream}{link[link.index('<') + 1:link.index('>')]}" if link else None
        return out

    async def repositories(self) -> list[str]:
        return await self._all("/v2/_catalog", "repositories")

    async def tags(self, repo: str) -> list[str]:
        return sorted(await self._all(f"/v2/{repo}/tags/list", "tags"))

    async def head(self, repo: str, ref: str) -> TagRecord | None:
        url = f"{self.upstream}/v2/{repo}/manifests/{ref}"
        async with self._session().head(url, headers={"Accept": ACCEPT}) as r:
            if r.status != 200:
                return None
            return TagRecord(ref, r.headers["Docker-Content-Digest"],
                             r.headers.get("Content-Type", "").split(";")[0], int(r.headers.get("Content-Length", 0)))

    async def manifest(self, repo: str, ref: str) -> dict[str, Any]:
        async with self._session().get(f"{self.upstream}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}) as r:
            doc: dict[str, Any] = await r.json(content_type=None)
            return doc

    async def tags_if_present(self, repo: str) -> list[str] | None:
        """The repository's tags, or None when the registry does not list it."""
        if repo not in await self.repositories():
            return None
        return await self.tags(repo)

    async def manifest_raw(self, repo: str, ref: str) -> tuple[bytes | None, str]:
        """(bytes, media type) of a manifest, or (None, "") when absent."""
        async with self._session().get(f"{self.upstream}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}) as r:
            if r.status != 200:
                return None, ""
            return await r.read(), r.headers.get("Content-Type", "")

    async def tag_records(self, repo: str, tags: list[str]) -> list[TagRecord]:
        found = await asyncio.gather(*(self.head(repo, t) for t in tags))
        return [r for r in found if r is not None]


async def relay(request: web.Request, session: aiohttp.ClientSession, url: str,
                rewrite: Callable[[str], str] = lambda v: v) -> web.StreamResponse:
    """Forward a request to `url` (body streamed both ways); header values pass through `rewrite`."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
    data = request.content if request.body_exists else None
    async with session.request(request.method, url, headers=headers, data=data, allow_redirects=False) as up:
        out = CIMultiDict((k, rewrite(v)) for k, v in up.headers.items() if k.lower() not in _HOP)
        resp = web.StreamResponse(status=up.status, headers=out)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp
