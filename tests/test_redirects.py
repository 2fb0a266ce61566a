"""A registry that redirects everything elsewhere, as registry.k8s.io does (manifests and tag lists to
Artifact Registry, blobs to S3/CloudFront): listing, plan and copy follow, and each hop authenticates on its
own host's terms."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image, push_index

from gcrsync.cli import main
from harness import RegistryServer, skopeo_digest, unique_repo


class Redirector:
    """An archeio-like front on 127.0.0.1: `/v2/` answers itself, every other /v2 path is a 307 elsewhere."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
            if request.path == "/v2/":
                return web.json_response({})
            raise web.HTTPTemporaryRedirect(self.upstream + request.path_qs)

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return runner

        self.runner = self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> Redirector:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def redirector(registry: RegistryServer) -> Iterator[Redirector]:
    with Redirector(registry.url) as front:
        yield front


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_sync_and_copy_through_a_redirecting_front(registry: RegistryServer, registry2: RegistryServer,
                                                    redirector: Redirector, tmp_path: Path) -> None:
    ns = unique_repo("k8s")
    single, _ = push_image(registry.pusher(), f"{ns}/pause", "3.9", layers=[make_layer(191, 3_000)])
    multi = push_index(registry.pusher(), f"{ns}/etcd", "3.5", [("linux", "amd64", None), ("linux", "arm64", None)],
                       2_000, seed=192)
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["sync", f"{redirector.host}/{ns}", "--dest", f"{registry2.host}/k8s",
                                       "--report", str(report)], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    states = json.loads(report.read_text())["totals"]["states"]
    assert states == {"copied": 2}
    assert skopeo_digest(registry2.ref("k8s/pause", "3.9")) == single
    assert skopeo_digest(registry2.ref("k8s/etcd", "3.5")) == multi
    redirected = [p for m, p, _ in redirector.seen if p != "/v2/"]
    assert any("/manifests/" in p for p in redirected) and any("/blobs/" in p for p in redirected)
    assert any("/tags/list" in p or "_catalog" in p for p in redirected)
    copy = CliRunner().invoke(main, ["copy", f"{redirector.host}/{ns}/etcd:3.5", f"oci:{tmp_path / 'etcd'}:3.5"],
                              env=_env(tmp_path))
    assert copy.exit_code == 0, copy.output


def test_redirect_target_with_its_own_token_auth(token_registry: RegistryServer, registry2: RegistryServer,
                                                 tmp_path: Path) -> None:
    """Like Artifact Registry behind registry.k8s.io: the redirect target challenges with its own realm and
    scope; an anonymous token for that scope is fetched there, and the front never sees a token."""
    issuer = token_registry.issuer
    assert issuer is not None
    repo = unique_repo("ar")
    digest, _ = push_image(token_registry.pusher(), f"{repo}/app", "v1", layers=[make_layer(193, 2_000)])
    saved = issuer.anonymous_actions
    issuer.anonymous_actions = frozenset({"pull"})
    try:
        with Redirector(token_registry.url) as front:
            result = CliRunner().invoke(main, ["copy", f"{front.host}/{repo}/app:v1", f"{registry2.host}/{repo}:v1"],
                                        env=_env(tmp_path))
            seen: list[tuple[str, str, str | None]] = list(front.seen)
    finally:
        issuer.anonymous_actions = saved
    assert result.exit_code == 0, result.output
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest
    assert all(auth is None for _, _, auth in seen)
