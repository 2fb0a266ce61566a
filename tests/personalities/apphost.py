"""Run an aiohttp application on 127.0.0.1 (a free port) in a thread, and proxy requests to a real registry.

The personalities are synchronous context managers so tests drive them like the `docker-registry`
processes of harness.py; their handlers run on the app's own event loop thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession, web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Hop-by-hop and framing headers are the proxy's own business, never copied through.
_DROPPED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
            "authorization", "upgrade", "te", "trailer", "proxy-authorization", "proxy-authenticate"}


class AppHost:
    """One aiohttp app served on 127.0.0.1:<free port> from a background thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.session: ClientSession | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.session = ClientSession(trust_env=False)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self.handler)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> AppHost:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("personality app did not start")
        return self

    def stop(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self.session is not None:
                await self.session.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def call(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on the app's loop from the test thread (e.g. to read the backend as the app does)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    async def proxy(self, request: web.Request, upstream: str, path_qs: str | None = None) -> web.Response:
        """Forward a request to the real registry at `upstream` and answer with its response."""
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        body = await request.read()
        async with self.session.request(request.method, upstream.rstrip("/") + (path_qs or request.path_qs),
                                        headers=headers, data=body or None, allow_redirects=False) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED}
            return web.Response(status=resp.status, body=data if request.method != "HEAD" else None,
                                headers=out)


async def backend_list(session: ClientSession, base: str, path: str, key: str) -> list[str] | None:
    """Every entry of a real registry's `_catalog` or `tags/list` (following its Link pages); None on 404."""
    out: list[str] = []
    url: str | None = f"{base}{path}?n=1000"
    while url is not None:
        async with session.get(url) as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            out.extend((await resp.json()).get(key) or [])
            link = resp.headers.get("Link")
        url = f"{base}{link.split('<', 1)[1].split('>', 1)[0]}" if link else None
    return out
