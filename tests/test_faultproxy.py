"""The fault-injecting proxy (tests/faultproxy.py): transparent when idle, and every fault kind observable."""

from __future__ import annotations

import email.message
import email.utils
import hashlib
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tools.imagefactory import ACCEPT_ALL, RegistryPusher, make_layer, push_image, sha256_digest

from faultproxy import Fault, FaultProxy, FaultProxyError, default_manifest_lie
from harness import RegistryServer, unique_repo

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Image:
    repo: str
    manifest: bytes
    manifest_digest: str
    layer: bytes

    @property
    def manifest_path(self) -> str:
        return f"/v2/{self.repo}/manifests/v1"

    @property
    def blob_path(self) -> str:
        return f"/v2/{self.repo}/blobs/{sha256_digest(self.layer)}"


@dataclass
class Reply:
    status: int
    headers: email.message.Message
    body: bytes


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
    """One request with urllib; HTTP errors are replies, not exceptions."""
    req = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT_ALL, **(headers or {})})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def read_until_error(url: str) -> tuple[int, bytes, BaseException | None]:
    """(Content-Length, bytes received, the exception that ended the read or None), reading in small chunks."""
    got = bytearray()
    with _OPENER.open(url, timeout=10) as r:
        length = int(r.headers["Content-Length"])
        try:
            while chunk := r.read(4096):
                got += chunk
        except (http.client.IncompleteRead, OSError) as exc:
            return length, bytes(got), exc
    return length, bytes(got), None


@pytest.fixture(scope="module")
def image(registry: RegistryServer) -> Image:
    repo = unique_repo("faultproxy/img")
    layer = make_layer(20240101, 256 * 1024)
    digest, raw = push_image(registry.pusher(), repo, "v1", layers=[layer])
    return Image(repo, raw, digest, layer)


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url, seed=1) as p:
        yield p


def test_idle_proxy_is_transparent(proxy: FaultProxy, registry: RegistryServer, image: Image) -> None:
    direct = fetch(registry.url + image.manifest_path)
    via = fetch(proxy.url + image.manifest_path)
    assert via.status == direct.status == 200
    assert via.body == direct.body == image.manifest
    assert via.headers["Docker-Content-Digest"] == image.manifest_digest
    assert via.headers["Content-Type"] == direct.headers["Content-Type"]
    head = fetch(proxy.url + image.blob_path, method="HEAD")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(image.layer)) and head.body == b""
    assert fetch(proxy.url + image.blob_path).body == image.layer
    stats = proxy.stats
    assert stats.requests == stats.forwarded == 3 and not stats.faults
    assert stats.blob_full[image.blob_path] == 1 and stats.max_blob_serves() == 1
    assert stats.serves_by_digest() == {sha256_digest(image.layer): 1}
    assert proxy.host in proxy.url and proxy.host != registry.host


def test_push_through_proxy_streams_bodies_and_rewrites_location(proxy: FaultProxy, registry: RegistryServer) -> None:
    repo = unique_repo("faultproxy/push")
    start = fetch(proxy.url + f"/v2/{repo}/blobs/uploads/", method="POST")
    assert start.status == 202
    assert start.headers["Location"].startswith(proxy.url + f"/v2/{repo}/blobs/uploads/")
    _, raw = push_image(RegistryPusher(proxy.url), repo, "v1", layers=[make_layer(7, 50_000)])
    assert fetch(registry.url + f"/v2/{repo}/manifests/v1").body == raw  # it really landed upstream


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_status_faults_answer_oci_errors_without_upstream(
    proxy: FaultProxy, registry: RegistryServer, kind: str
) -> None:
    path = f"/v2/{unique_repo('faultproxy/never')}/tags/list"
    proxy.fail_next(1, kind)
    reply = fetch(proxy.url + path)
    assert reply.status == int(kind)
    assert json.loads(reply.body)["errors"][0]["code"] in {"UNKNOWN", "UNAVAILABLE"}
    assert reply.headers["Content-Type"].startswith("application/json")
    assert proxy.stats.faults == {kind: 1} and proxy.stats.forwarded == 0
    assert all(entry.path != path for entry in registry.requests())


def test_429_carries_retry_after_seconds_or_http_date(proxy: FaultProxy) -> None:
    proxy.fail_next(1, "429", retry_after=1)
    proxy.fail_next(1, "429", retry_after=2, retry_after_date=True)
    seconds, dated, after = (fetch(proxy.url + "/v2/") for _ in range(3))
    assert seconds.status == dated.status == 429
    assert json.loads(seconds.body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert seconds.headers["Retry-After"] == "1"
    assert email.utils.parsedate_to_datetime(dated.headers["Retry-After"]).tzinfo is not None
    assert after.status == 200 and "Retry-After" not in after.headers


def test_reset_aborts_mid_body_and_counts_a_partial_serve(proxy: FaultProxy, image: Image) -> None:
    proxy.fail_next(1, "reset", methods=("GET",), path_regex="/blobs/")
    length, got, exc = read_until_error(proxy.url + image.blob_path)
    assert exc is not None and length == len(image.layer)
    assert len(got) < length and got == image.layer[: len(got)]
    assert read_until_error(proxy.url + image.blob_path) == (length, image.layer, None)  # only one fault
    stats = proxy.stats
    assert stats.faults == {"reset": 1}
    assert (stats.blob_partial[image.blob_path], stats.blob_full[image.blob_path]) == (1, 1)
    assert stats.blob_serves(image.blob_path) == 2


def test_truncate_sends_fewer_bytes_than_content_length(proxy: FaultProxy, image: Image) -> None:
    proxy.fail_next(1, "truncate", cut=1000)
    with _OPENER.open(proxy.url + image.blob_path, timeout=10) as r:
        assert r.headers["Content-Length"] == str(len(image.layer))
        with pytest.raises(http.client.IncompleteRead) as info:
            r.read()
    assert info.value.partial == image.layer[:1000]
    assert proxy.stats.blob_partial[image.blob_path] == 1


def test_stall_exceeds_a_short_client_timeout_and_stop_ends_it(registry: RegistryServer, image: Image) -> None:
    proxy = FaultProxy(registry.url).start()
    try:
        proxy.fail_next(1, "stall", stall_seconds=600)
        with pytest.raises(TimeoutError):
            fetch(proxy.url + image.manifest_path, timeout=0.2)
        assert proxy.stats.faults == {"stall": 1} and proxy.stats.forwarded == 0
    finally:
        proxy.stop()  # must not wait out the 600 s stall (the suite would hang)
    proxy.stop()  # idempotent


def test_short_stall_still_answers_correctly(proxy: FaultProxy, image: Image) -> None:
    proxy.fail_next(1, "stall", stall_seconds=0.01)
    assert fetch(proxy.url + image.manifest_path).body == image.manifest


def test_added_headers_only_on_matching_responses(proxy: FaultProxy, image: Image) -> None:
    proxy.add_headers({"RateLimit-Remaining": "0;w=60", "RateLimit-Limit": "100;w=60"}, path="/manifests/")
    hit, miss = fetch(proxy.url + image.manifest_path), fetch(proxy.url + "/v2/")
    assert hit.headers["RateLimit-Remaining"] == "0;w=60" and hit.headers["RateLimit-Limit"] == "100;w=60"
    assert "RateLimit-Remaining" not in miss.headers
    proxy.fail_next(1, "429", path_regex="/manifests/")
    assert fetch(proxy.url + image.manifest_path).headers["RateLimit-Limit"] == "100;w=60"  # injected ones too


def _run_seeded(upstream: str, seed: int, statuses: list[int] | None = None) -> list[Any]:
    with FaultProxy(upstream, seed=seed, faults=[Fault("503", 0.5, methods=("GET",))]) as p:
        for _ in range(30):
            status = fetch(p.url + "/v2/").status
            if statuses is not None:
                statuses.append(status)
        return p.stats.decisions


def test_seeded_runs_repeat_the_same_decisions(registry: RegistryServer) -> None:
    statuses: list[int] = []
    first = _run_seeded(registry.url, 7, statuses)
    assert first == _run_seeded(registry.url, 7)
    assert first != _run_seeded(registry.url, 8)
    assert statuses == [503 if d.fault == "503" else 200 for d in first]
    assert 0 < statuses.count(503) < 30


def test_max_faults_caps_random_faults(registry: RegistryServer) -> None:
    with FaultProxy(registry.url, max_faults=3) as p:
        p.add_fault("502", 1.0)
        assert [fetch(p.url + "/v2/").status for _ in range(6)] == [502, 502, 502, 200, 200, 200]
        assert p.stats.faults == {"502": 3}


def test_fail_next_injects_exactly_n_on_matching_paths(proxy: FaultProxy, image: Image) -> None:
    proxy.fail_next(3, "503", path_regex=r"/tags/list$")
    assert fetch(proxy.url + "/v2/").status == 200
    tags = f"{proxy.url}/v2/{image.repo}/tags/list"
    assert [fetch(tags).status for _ in range(5)] == [503, 503, 503, 200, 200]
    assert proxy.stats.faults == {"503": 3}


def test_range_requests_pass_through(proxy: FaultProxy, image: Image) -> None:
    tail = fetch(proxy.url + image.blob_path, headers={"Range": "bytes=1000-"})
    assert tail.status == 206 and tail.body == image.layer[1000:]
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(image.layer) - 1}/{len(image.layer)}"
    middle = fetch(proxy.url + image.blob_path, headers={"Range": "bytes=10-19"})
    assert middle.status == 206 and middle.body == image.layer[10:20]
    assert proxy.stats.blob_partial[image.blob_path] == 2 and proxy.stats.blob_full[image.blob_path] == 0


def test_lying_blob_has_same_length_other_bytes_even_in_ranges(proxy: FaultProxy, image: Image) -> None:
    digest = sha256_digest(image.layer)
    proxy.lie_blob(digest)
    full = fetch(proxy.url + image.blob_path)
    assert len(full.body) == len(image.layer) and sha256_digest(full.body) != digest
    assert full.headers["Docker-Content-Digest"] == digest  # the lie: the header still claims the real digest
    assert fetch(proxy.url + image.blob_path, headers={"Range": "bytes=5000-"}).body == full.body[5000:]
    fixed = bytes(len(image.layer))
    proxy.lie_blob(digest, fixed)
    assert fetch(proxy.url + image.blob_path).body == fixed
    assert proxy.stats.faults["lie"] == 3


def test_lying_manifest_default_and_custom(proxy: FaultProxy, image: Image) -> None:
    proxy.lie_manifest(r"/manifests/v1$")
    lied = fetch(proxy.url + image.manifest_path)
    assert lied.body == default_manifest_lie(image.manifest) != image.manifest
    assert len(lied.body) == len(image.manifest) and json.loads(lied.body) == json.loads(image.manifest)
    assert lied.headers["Docker-Content-Digest"] == image.manifest_digest
    proxy.clear_faults()
    proxy.lie_manifest(image.repo, lambda raw: raw + b"   ")
    assert fetch(proxy.url + image.manifest_path).body == image.manifest + b"   "


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "explode"}, {"kind": "503", "probability": 1.5}, {"kind": "503", "path": "("}],
    ids=["kind", "probability", "regex"],
)
def test_bad_fault_config_is_a_clear_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(FaultProxyError):
        Fault(**kwargs)


def test_bad_upstream_is_a_clear_error() -> None:
    with pytest.raises(FaultProxyError, match="upstream"):
        FaultProxy("127.0.0.1:5000")


@pytest.fixture
async def async_proxy(registry: RegistryServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(registry.url) as p:
        yield p


async def test_async_client_keepalive_and_chunked_upload(async_proxy: FaultProxy) -> None:
    repo = unique_repo("faultproxy/async")
    data = make_layer(99, 100_000)
    digest = sha256_digest(data)

    async def body() -> AsyncIterator[bytes]:  # no length known up front: aiohttp sends it chunked
        for i in range(0, len(data), 16_384):
            yield data[i : i + 16_384]

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{async_proxy.url}/v2/{repo}/blobs/uploads/") as r:
            assert r.status == 202
            location = r.headers["Location"]
        assert location.startswith(async_proxy.url)
        async with session.put(location, params={"digest": digest}, data=body()) as r:
            assert r.status == 201, await r.text()
        async with session.get(f"{async_proxy.url}/v2/{repo}/blobs/{digest}") as r:
            assert hashlib.sha256(await r.read()).hexdigest() == digest.split(":", 1)[1]
    assert async_proxy.stats.forwarded == 3
