"""Reliability against real registries behind a fault-injecting proxy: flaky networks, rate limits, liars.

Every sync here runs through ``Mirror`` with a Transport built by the test (short timeouts, fast backoff), and
is checked with skopeo against the real registries behind the proxy, never through it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from tools.imagefactory import derive_seed, make_layer, push_image, push_index, sha256_digest

from faultproxy import FaultProxy
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.engine.plan import SourceSpec
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from gcrsync.sync import Mirror, SyncOptions, SyncReport
from harness import MakeRegistry, RegistryServer, skopeo_digest, skopeo_raw, unique_repo

MAX_SERVES = 4  # no blob may be served (fully or partly) more often than this in one run


@asynccontextmanager
async def make_client(**options: Any) -> AsyncIterator[RegistryClient]:
    """A client with test-sized knobs: a stall costs one second, a backoff a few milliseconds."""
    knobs: dict[str, Any] = {"connect_timeout": 2.0, "read_timeout": 1.0, "backoff_base": 0.02,
                             "max_attempts": 6, **options}
    async with Transport(TransportOptions(**knobs)) as transport:
        yield RegistryClient(transport, CredentialStore(use_docker_config=False))


async def sync_namespace(client: RegistryClient, source_host: str, namespace: str, dest: str,
                         jobs: int = 4) -> SyncReport:
    spec = SourceSpec(registry=source_host, namespace=namespace, target_prefix=dest)
    return await Mirror(client, [spec], SyncOptions(jobs=jobs, query_jobs=4)).run()


def fill_namespace(server: RegistryServer, ns: str, seed: int) -> dict[str, str]:
    """Three single-arch repos sharing a base layer plus one two-platform index, 250 KB..1.2 MB blobs.

    Returns ``{source repo (relative to ns): tag}`` → digest, keyed as ``"name:tag"``.
    """
    pusher = server.pusher()
    base = make_layer(derive_seed(seed, "base"), 600_000)
    out: dict[str, str] = {}
    for i, name in enumerate(["api", "worker", "tools/cli"]):
        layer = make_layer(derive_seed(seed, name), 250_000 + 450_000 * i)
        out[f"{name}:v1"], _ = push_image(pusher, f"{ns}/{name}", "v1", layers=[base, layer])
    plats = [("linux", "amd64", None), ("linux", "arm64", "v8")]
    out["multi:v2"] = push_index(pusher, f"{ns}/multi", "v2", plats, 400_000, seed=seed)
    return out


def blob_digests(raw: bytes) -> list[str]:
    doc = json.loads(raw)
    return ([doc["config"]["digest"]] if "config" in doc else []) + [x["digest"] for x in doc.get("layers", [])]


def assert_mirrored(source: RegistryServer, ns: str, target: RegistryServer, prefix: str,
                    expected: dict[str, str]) -> None:
    """skopeo, on the real registries: each target tag has the source's digest and all of its children."""
    for key, digest in expected.items():
        name, tag = key.split(":")
        src_repo, dst_repo = f"{ns}/{name}", f"{prefix}/{name.replace('/', '_')}"
        assert skopeo_digest(source.ref(src_repo, tag)) == digest
        assert skopeo_digest(target.ref(dst_repo, tag)) == digest, key
        doc = json.loads(skopeo_raw(target.ref(dst_repo, tag)))
        manifests = [skopeo_raw(target.ref(dst_repo, m["digest"])) for m in doc.get("manifests", [])] or [
            skopeo_raw(target.ref(dst_repo, tag))]
        pusher = target.pusher()
        for raw in manifests:
            for blob in blob_digests(raw):
                assert pusher.request("HEAD", f"/v2/{dst_repo}/blobs/{blob}", repo=dst_repo).status == 200


def failed_images(report: SyncReport) -> dict[str, str]:
    return {item.source: res.error or "" for item, res in report.outcome.results if res.state == "failed"}


# -- flaky source / flaky target -----------------------------------------------------------------------------
async def test_namespace_sync_through_faulty_source(make_registry: MakeRegistry) -> None:
    source, target = make_registry(), make_registry()
    ns = "team"  # fresh registry: fixed paths keep the proxy's seeded draws the same from run to run
    expected = fill_namespace(source, ns, seed=101)
    proxy = FaultProxy(source.url, seed=7, max_faults=30)
    for kind in ("500", "503", "429"):
        proxy.add_fault(kind, 0.06, retry_after=0)
    proxy.add_fault("reset", 0.2, methods=("GET",), path="/blobs/", cut=0.5)
    proxy.add_fault("truncate", 0.1, methods=("GET",), cut=0.3)
    # Exact faults too, so every kind is seen whatever the interleaving: a stall costs one read timeout.
    proxy.fail_next(1, "stall", "/manifests/", stall_seconds=30)
    proxy.fail_next(1, "reset", "/blobs/", cut=0.5)
    proxy.fail_next(1, "truncate", "/blobs/", cut=0.7)
    proxy.fail_next(1, "429", "/manifests/", retry_after=1)
    async with proxy, make_client() as client:
        report = await sync_namespace(client, proxy.host, ns, f"{target.host}/mirror")
        reasons = client.transport.stats.retry_reasons
    stats = proxy.stats
    assert failed_images(report) == {} and report.ok
    assert report.to_json()["totals"]["states"] == {"copied": len(expected)}
    assert_mirrored(source, ns, target, "mirror", expected)
    for kind in ("stall", "reset", "truncate", "429"):
        assert stats.faults[kind] >= 1, kind
    assert report.retries > 0 and report.to_json()["totals"]["retries"] == report.retries
    assert reasons["blob-resume"] >= 2 and reasons["429"] >= 1
    assert any("Timeout" in r for r in reasons), reasons
    serves = stats.serves_by_digest()
    assert serves and max(serves.values()) <= MAX_SERVES, serves


async def test_namespace_sync_through_faulty_target(make_registry: MakeRegistry) -> None:
    source, target = make_registry(), make_registry()
    ns = unique_repo("flaky-dst")
    expected = fill_namespace(source, ns, seed=202)
    proxy = FaultProxy(target.url, seed=11, max_faults=20)
    for kind in ("500", "502", "503", "429"):
        proxy.add_fault(kind, 0.05, retry_after=0)
    # The final PUT of a blob streams its body, so it cannot be replayed: the upload starts over.
    proxy.fail_next(2, "503", r"/blobs/uploads/.+", methods=("PUT",))
    proxy.fail_next(1, "429", r"/blobs/uploads/.+", methods=("PUT",), retry_after=0)
    proxy.fail_next(1, "500", "/manifests/", methods=("PUT",))
    async with proxy, make_client() as client:
        report = await sync_namespace(client, source.host, ns, f"{proxy.host}/mirror")
        reasons = client.transport.stats.retry_reasons
    stats = proxy.stats
    assert failed_images(report) == {} and report.ok
    assert_mirrored(source, ns, target, "mirror", expected)
    puts = [d for d in stats.decisions if d.method == "PUT" and "/blobs/uploads/" in d.path]
    faulted = [d.path for d in puts if d.fault]
    assert len(faulted) >= 3
    # Each failed upload was started over in a new session, never re-PUT to the session that failed.
    assert all(sum(d.path == path for d in puts) == 1 for path in faulted)
    assert reasons["upload-restart"] >= 3
    assert report.retries >= reasons["upload-restart"] + reasons["429"]


# -- lying source --------------------------------------------------------------------------------------------
def push_with_size_lie(server: RegistryServer, repo: str, seed: int, delta: int) -> tuple[str, str]:
    """An image whose layer descriptor claims ``delta`` bytes more than the blob has: (digest, layer digest)."""
    pusher = server.pusher()
    _, raw = push_image(pusher, repo, None, layers=[make_layer(seed, 120_000)])
    doc = json.loads(raw)
    doc["layers"][0]["size"] += delta
    lied = json.dumps(doc).encode()
    return pusher.push_manifest(repo, "v1", lied, doc["mediaType"]), doc["layers"][0]["digest"]


async def test_lying_source_fails_only_the_lying_images(make_registry: MakeRegistry) -> None:
    source, target = make_registry(), make_registry()
    ns = "team"
    pusher = source.pusher()
    good = {f"good{i}:v1": push_image(pusher, f"{ns}/good{i}", "v1", layers=[make_layer(300 + i, 150_000)])[0]
            for i in range(2)}
    bad_layer = make_layer(310, 200_000)
    push_image(pusher, f"{ns}/blobliar", "v1", layers=[make_layer(311, 50_000), bad_layer])
    index = push_index(pusher, f"{ns}/manifestliar", "v1", [("linux", "amd64", None), ("linux", "arm64", None)],
                       60_000, seed=312)
    children = [m["digest"] for m in json.loads(skopeo_raw(source.ref(f"{ns}/manifestliar", index)))["manifests"]]
    _, long_layer = push_with_size_lie(source, f"{ns}/sizebig", 313, +100)
    _, short_layer = push_with_size_lie(source, f"{ns}/sizesmall", 314, -100)
    async with FaultProxy(source.url) as proxy, make_client() as client:
        proxy.lie_blob(sha256_digest(bad_layer))
        proxy.lie_manifest(f"/manifests/{children[1]}$")  # the child fetched by digest, not the index
        report = await sync_namespace(client, proxy.host, ns, f"{target.host}/mirror")
    failed = {key.split("/")[-1]: err for key, err in failed_images(report).items()}
    assert sorted(failed) == ["blobliar:v1", "manifestliar:v1", "sizebig:v1", "sizesmall:v1"]
    assert "hashes to" in failed["blobliar:v1"] and "refused" in failed["blobliar:v1"]
    assert "not the requested" in failed["manifestliar:v1"] and children[1][:19] in failed["manifestliar:v1"]
    assert "descriptor" in failed["sizebig:v1"] and "descriptor" in failed["sizesmall:v1"]
    assert proxy.stats.faults["lie"] >= 2
    assert_mirrored(source, ns, target, "mirror", good)
    check = target.pusher()
    for name in ("blobliar", "manifestliar", "sizebig", "sizesmall"):
        assert check.request("HEAD", f"/v2/mirror/{name}/manifests/v1", repo=f"mirror/{name}").status == 404
    # Nothing built on the bad data reached the target: not the lying child, nor the bad blobs.
    assert check.request("HEAD", f"/v2/mirror/manifestliar/manifests/{children[1]}",
                         repo="mirror/manifestliar").status == 404
    for name, blob in [("blobliar", sha256_digest(bad_layer)), ("sizebig", long_layer),
                       ("sizesmall", short_layer)]:
        assert check.request("HEAD", f"/v2/mirror/{name}/blobs/{blob}", repo=f"mirror/{name}").status == 404
    assert not report.ok


# -- rate limits ---------------------------------------------------------------------------------------------
async def test_retry_after_is_waited_for_and_capped(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("retry-after")
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[make_layer(401, 20_000)])
    async with FaultProxy(registry.url) as proxy:
        proxy.fail_next(1, "429", "/manifests/v1$", methods=("GET",), retry_after=2)
        async with make_client() as client:
            result = await copy_image(client.repository(proxy.host, repo), "v1",
                                      client.repository(registry2.host, repo), "v1", BlobMover(2))
            stats = client.transport.stats
        assert result.state == "copied" and stats.retry_reasons["429"] == 1 and stats.retries == 1
        assert stats.waited_seconds >= 2.0  # the server's Retry-After, not a 20 ms backoff
        # A Retry-After beyond max_retry_wait (as seconds or as an HTTP date) is cut to the cap.
        proxy.fail_next(1, "429", "/manifests/v1$", methods=("GET",), retry_after=3600)
        proxy.fail_next(1, "429", "/manifests/v1$", methods=("GET",), retry_after=3600, retry_after_date=True)
        async with make_client(max_retry_wait=0.2) as client:
            await client.repository(proxy.host, repo).get_manifest("v1")
            stats = client.transport.stats
        assert stats.retry_reasons["429"] == 2
        assert stats.waited_seconds == pytest.approx(0.4, abs=0.01)
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


async def test_rate_limit_budget_slows_down(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("ratelimit")
    digest = push_index(registry.pusher(), repo, "v1", [("linux", "amd64", None), ("linux", "arm64", None)],
                        10_000, seed=402)
    async with FaultProxy(registry.url) as proxy, make_client(max_retry_wait=0.05) as client:
        proxy.add_headers({"RateLimit-Limit": "100;w=60", "RateLimit-Remaining": "0;w=60"})
        result = await copy_image(client.repository(proxy.host, repo), "v1",
                                  client.repository(registry2.host, repo), "v1", BlobMover(4))
        stats = client.transport.stats
        answered = proxy.stats.requests
    assert result.state == "copied"
    assert stats.rate_limit_slowdowns >= answered > 0  # every answer from the budgeted host said "0 left"
    assert stats.retries == 0 and stats.waited_seconds > 0  # paced waits, recorded, without any retry
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


# -- errors that must not be retried -------------------------------------------------------------------------
@asynccontextmanager
async def refusing_registry(status: int, code: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A registry on 127.0.0.1 listing team/app:v1 whose manifest GET always answers ``status`` with an OCI
    error body: yields (host, the paths of every manifest GET it answered)."""
    gets: list[str] = []
    fake_digest = "sha256:" + "ab" * 32

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v2/":
            return web.json_response({})
        if path == "/v2/_catalog":
            return web.json_response({"repositories": ["team/app"]})
        if path == "/v2/team/app/tags/list":
            return web.json_response({"name": "team/app", "tags": ["v1"]})
        if path == "/v2/team/app/manifests/v1" and request.method == "HEAD":
            return web.Response(headers={"Docker-Content-Digest": fake_digest, "Content-Length": "300",
                                         "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if path.startswith("/v2/team/app/manifests/"):
            gets.append(path)
            body = {"errors": [{"code": code, "message": f"refused by the test ({status})"}]}
            return web.json_response(body, status=status)
        return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": path}]}, status=404)

    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}", gets
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("status", "code"), [(403, "DENIED"), (404, "MANIFEST_UNKNOWN"), (400, "MANIFEST_INVALID")])
async def test_non_retryable_errors_fail_fast(registry2: RegistryServer, status: int, code: str) -> None:
    dest = f"{registry2.host}/{unique_repo('refused')}"
    async with refusing_registry(status, code) as (host, gets), make_client() as client:
        report = await sync_namespace(client, host, "team", dest)
        stats = client.transport.stats
    assert gets == ["/v2/team/app/manifests/v1"]  # asked once, never again
    assert stats.retries == 0 and report.retries == 0
    [image] = report.to_json()["images"]
    assert image["state"] == "failed"
    assert f"{code}: refused by the test ({status})" in image["error"]
    assert not report.ok


# -- resumable blob downloads --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reset", "truncate"])
async def test_dropped_blob_download_resumes_with_range(registry: RegistryServer, registry2: RegistryServer,
                                                        kind: str) -> None:
    repo = unique_repo("resume")
    layer = make_layer(403, 1_200_000)
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    registry.clear_requests()
    async with FaultProxy(registry.url) as proxy, make_client() as client:
        proxy.fail_next(1, kind, f"{path}$", cut=0.5)
        result = await copy_image(client.repository(proxy.host, repo), "v1",
                                  client.repository(registry2.host, repo), "v1", BlobMover(2))
        stats = client.transport.stats
        served = proxy.stats
    assert result.state == "copied" and result.bytes_copied >= len(layer)
    assert stats.retry_reasons["blob-resume"] == 1
    # Cut once, then a ranged request: two partial serves, never a second full download.
    assert served.faults[kind] == 1 and served.blob_partial[path] == 2 and served.blob_full[path] == 0
    statuses = [r.status for r in registry.requests() if r.method == "GET" and r.path == path]
    assert statuses == [200, 206]
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


async def test_a_resumed_download_with_the_wrong_content_range_is_refused(registry: RegistryServer,
                                                                         registry2: RegistryServer) -> None:
    repo = unique_repo("badrange")
    layer = make_layer(404, 1_200_000)
    push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    registry.clear_requests()
    async with FaultProxy(registry.url) as proxy, make_client() as client:
        proxy.fail_next(1, "reset", f"{path}$", cut=0.5)
        # Every answer for the blob claims to start at byte 0: the resumed 206 then lies about its range.
        proxy.add_headers({"Content-Range": f"bytes 0-{len(layer) - 1}/{len(layer)}"}, path=f"{path}$")
        result = await copy_image(client.repository(proxy.host, repo), "v1",
                                  client.repository(registry2.host, repo), "v1", BlobMover(2))
        stats = client.transport.stats
    # The lying 206 is not spliced in: the body is asked for again without Range (the bytes already passed
    # on are skipped), and the copy verifies.
    assert result.state == "copied"
    assert stats.retry_reasons["blob-resume"] == 2 and stats.retry_reasons["upload-restart"] == 0
    assert [r.status for r in registry.requests() if r.method == "GET" and r.path == path] == [200, 206, 200]
    assert skopeo_digest(registry2.ref(repo, "v1")) == skopeo_digest(registry.ref(repo, "v1"))


async def test_a_blob_corrupted_once_in_transit_is_fetched_again(registry: RegistryServer,
                                                                 registry2: RegistryServer) -> None:
    repo = unique_repo("corrupt-once")
    layer = make_layer(405, 300_000)
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    async with FaultProxy(registry.url) as proxy, make_client() as client:
        proxy.lie_blob(sha256_digest(layer), times=1)
        result = await copy_image(client.repository(proxy.host, repo), "v1",
                                  client.repository(registry2.host, repo), "v1", BlobMover(2))
        served, stats = proxy.stats, client.transport.stats
    assert result.state == "copied"
    assert served.faults["lie"] == 1 and served.blob_serves(path) == 2  # once bad, once good: never a third
    assert stats.retry_reasons["blob-corrupt"] == 1
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


async def test_a_source_that_never_answers_costs_one_retry_budget_not_four(registry: RegistryServer,
                                                                           registry2: RegistryServer) -> None:
    repo = unique_repo("deadsource")
    layer = make_layer(406, 2_000)
    push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    async with FaultProxy(registry.url) as proxy, make_client() as client:
        proxy.add_fault("stall", methods=("GET",), path=f"{path}$", stall_seconds=30)  # every GET of it
        with pytest.raises(Exception) as caught:
            await copy_image(client.repository(proxy.host, repo), "v1",
                             client.repository(registry2.host, repo), "v1", BlobMover(2))
        gets = [d for d in proxy.stats.decisions if d.method == "GET" and d.path == path]
    from gcrsync.errors import error_text

    assert "deadsource" in error_text(caught.value)  # our one-line error, naming what failed
    assert len(gets) == 6  # the transport's attempts (max_attempts=6), never restarted by the blob mover
