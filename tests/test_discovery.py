"""Discovery against recorded listing responses (tests/data/listings/*.json: URL -> {body, headers}).

The fixtures follow the documented shapes: GCR's tags/list extension with string numbers (sample in
goharbor/harbor's googlegcr adapter), Artifact Registry's string numbers too (go-containerregistry
pkg/v1/google/list.go rawManifestInfo: Size, Created, Uploaded are strings), Docker Hub's
{count,next,previous,results} pages, Quay's v1 API
(quay/quay endpoints/api/tag.py: start_ts, last_modified, manifest_digest, has_additional), and
OCI _catalog / tags/list with RFC 8288 Link pagination.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gcrsync.errors import AuthError, ConfigError, NotFound, RegistryError
from gcrsync.registry.discovery import DiscoveredRepo, DiscoveryError, JsonPage, default_method, discover

DATA = Path(__file__).parent / "data" / "listings"
D = {c: "sha256:" + c * 64 for c in "123456789ef"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


class FakeFetcher:
    """Serves recorded responses; unknown URLs are 404s, like a registry would answer."""

    def __init__(self, responses: Mapping[str, Any], errors: Mapping[str, RegistryError] | None = None) -> None:
        self.responses = dict(responses)
        self.errors = dict(errors or {})
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def get_json(self, url: str) -> JsonPage:
        self.calls.append(url)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(3):  # let every other ready task run, so concurrency would show
                await asyncio.sleep(0)
            if url in self.errors:
                raise self.errors[url]
            if url not in self.responses:
                raise NotFound(f"GET {url}: 404 NAME_UNKNOWN", status=404)
            entry = self.responses[url]
            return JsonPage(copy.deepcopy(entry["body"]), dict(entry.get("headers", {})), url)
        finally:
            self.in_flight -= 1


def by_name(repos: list[DiscoveredRepo]) -> dict[str, DiscoveredRepo]:
    return {r.repository: r for r in repos}


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


# --- default_method ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "method"),
    [
        ("gcr.io", "gcr"),
        ("k8s.gcr.io", "gcr"),
        ("asia.gcr.io", "gcr"),
        ("us-central1-docker.pkg.dev", "gcr"),
        ("registry.k8s.io", "gcr"),
        ("docker.io", "dockerhub"),
        ("quay.io", "quay"),
        ("ghcr.io", "ghcr"),
        ("localhost:5000", "catalog"),
        ("GCR.IO", "gcr"),
        ("notgcr.io", "catalog"),
    ],
)
def test_default_method(host: str, method: str) -> None:
    assert default_method(host) == method


# --- gcr / Artifact Registry -------------------------------------------------------------------------


async def test_gcr_recurses_keeps_node_tags_and_children() -> None:
    fetcher = FakeFetcher(load("gcr.json"))
    repos = await discover(fetcher, "gcr.io", "google-containers", "auto")
    assert [r.repository for r in repos] == [
        "google-containers/etcd",
        "google-containers/etcd/tools",
        "google-containers/kube-proxy",
        "google-containers/pause",
    ]
    found = by_name(repos)
    # etcd has tags *and* a child: both are kept.
    assert set(found["google-containers/etcd"].tags) == {"3.4.13-0"}
    assert found["google-containers/etcd/tools"].tags["v1"].digest == D["5"]
    assert found["google-containers/kube-proxy"].tags == {}


async def test_gcr_string_numbers_and_digests() -> None:
    repos = by_name(await discover(FakeFetcher(load("gcr.json")), "gcr.io", "google-containers", "gcr"))
    pause = repos["google-containers/pause"].tags
    assert list(pause) == ["3.1", "3.2", "latest", "untracked"]
    assert pause["3.2"].digest == pause["latest"].digest == D["1"]
    assert pause["3.2"].media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert pause["3.2"].size == 763789
    assert pause["3.2"].pushed_at == ms(1597767277119)
    assert pause["3.2"].pushed_at is not None and pause["3.2"].pushed_at.tzinfo is UTC
    assert pause["3.2"].pushed_at.microsecond == 119000
    assert pause["3.1"].digest == D["2"]
    # Listed in `tags` but absent from `manifest`: known tag, unknown digest.
    assert pause["untracked"].digest is None and pause["untracked"].pushed_at is None
    # Only timeCreatedMs present: used as the fallback push time.
    etcd = repos["google-containers/etcd"].tags["3.4.13-0"]
    assert etcd.pushed_at == ms(1600000000000)


async def test_artifact_registry_int_numbers() -> None:
    fetcher = FakeFetcher(load("artifact_registry.json"))
    repos = await discover(fetcher, "us-central1-docker.pkg.dev", "k8s-artifacts-prod/images", "auto")
    assert [r.repository for r in repos] == ["k8s-artifacts-prod/images/pause"]
    info = repos[0].tags["3.9"]
    assert (info.digest, info.size, info.pushed_at) == (D["6"], 311, ms(1672617600000))


async def test_gcr_concurrency_is_bounded() -> None:
    responses: dict[str, Any] = {
        "https://gcr.io/v2/ns/tags/list?n=10000": {"body": {"child": [f"r{i}" for i in range(20)], "tags": []}}
    }
    for i in range(20):
        responses[f"https://gcr.io/v2/ns/r{i}/tags/list?n=10000"] = {"body": {"child": [], "tags": ["t"]}}
    fetcher = FakeFetcher(responses)
    repos = await discover(fetcher, "gcr.io", "ns", "gcr", query_jobs=3)
    assert len(repos) == 20
    assert 1 < fetcher.max_in_flight <= 3


async def test_gcr_missing_namespace_is_an_error_not_empty() -> None:
    with pytest.raises(NotFound):
        await discover(FakeFetcher({}), "gcr.io", "no-such-project", "gcr")


async def test_gcr_failing_child_fails_the_namespace() -> None:
    gcr = load("gcr.json")
    url = "https://gcr.io/v2/google-containers/etcd/tools/tags/list?n=10000"
    fetcher = FakeFetcher(gcr, errors={url: AuthError("GET tools: 403 DENIED", status=403)})
    with pytest.raises(AuthError, match="403"):
        await discover(fetcher, "gcr.io", "google-containers", "gcr")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not a JSON object"),
        ("nope", "not a JSON object"),
        ({"child": "pause"}, "'child' is not a list"),
        ({"child": ["Bad_Name"]}, "invalid child repository name"),
        ({"child": ["../escape"]}, "invalid child repository name"),
        ({"tags": ["ok", 5]}, "invalid tag"),
        ({"tags": ["-leading-dash"]}, "invalid tag"),
        ({"manifest": []}, "'manifest' is not a JSON object"),
        ({"manifest": {"sha256:short": {"tag": ["a"]}}}, "invalid manifest key"),
        ({"manifest": {D["1"]: {"tag": "a"}}}, "'tag' is not a list"),
        ({"manifest": {D["1"]: {"tag": ["a"], "imageSizeBytes": "12kB"}}}, "imageSizeBytes"),
        ({"manifest": {D["1"]: {"tag": ["a"], "timeUploadedMs": -5}}}, "negative"),
        ({"manifest": {D["1"]: {"tag": ["a"], "timeUploadedMs": True}}}, "not a number"),
        ({"manifest": {D["1"]: {"tag": ["a"], "timeUploadedMs": "9" * 20}}}, "out of range"),
        ({"manifest": {D["1"]: {"tag": ["a"]}, D["2"]: {"tag": ["a"]}}}, "two digests"),
    ],
)
async def test_gcr_malformed_bodies_are_refused(body: object, message: str) -> None:
    fetcher = FakeFetcher({"https://gcr.io/v2/ns/tags/list?n=10000": {"body": body}})
    with pytest.raises(DiscoveryError, match=message) as info:
        await discover(fetcher, "gcr.io", "ns", "gcr")
    assert "gcr.io/v2/ns/tags/list" in str(info.value)


async def test_gcr_empty_namespace_lists_the_registry_root() -> None:
    responses = {
        "https://registry.k8s.io/v2/tags/list?n=10000": {"body": {"child": ["pause"], "tags": []}},
        "https://registry.k8s.io/v2/pause/tags/list?n=10000": {"body": {"child": [], "tags": ["3.9"]}},
    }
    repos = await discover(FakeFetcher(responses), "registry.k8s.io", "", "auto")
    assert [(r.repository, list(r.tags)) for r in repos] == [("pause", ["3.9"])]


async def test_gcr_empty_namespace_root_is_not_a_repository() -> None:
    responses: dict[str, Any] = {"https://gcr.io/v2/ns/tags/list?n=10000": {"body": {"child": [], "tags": []}}}
    assert await discover(FakeFetcher(responses), "gcr.io", "ns", "gcr") == []


@pytest.mark.parametrize("method", ["dockerhub", "quay", "ghcr"])
async def test_api_methods_need_a_namespace(method: Any) -> None:
    with pytest.raises(ConfigError, match="needs a namespace"):
        await discover(FakeFetcher({}), "example.com", "", method)


# --- catalog ------------------------------------------------------------------------------------------


async def test_catalog_follows_relative_and_absolute_links_and_filters() -> None:
    fetcher = FakeFetcher(load("catalog.json"))
    repos = await discover(fetcher, "localhost:5000", "mirror", "auto", scheme="http")
    assert [r.repository for r in repos] == ["mirror", "mirror/a", "mirror/b/c"]
    found = by_name(repos)
    assert list(found["mirror/a"].tags) == ["v1", "v2", "v3"]  # tags/list Link pagination merged
    assert found["mirror"].tags == {}  # "tags": null is an empty repository
    assert all(info.digest is None for info in found["mirror/a"].tags.values())
    # "mirrored/x" shares the prefix text but is not under "mirror/".
    assert not any("mirrored" in url and "tags" in url for url in fetcher.calls)
    assert "http://localhost:5000/v2/_catalog?last=mirrored%2Fx&n=1000" in fetcher.calls


async def test_catalog_empty_namespace_means_whole_registry() -> None:
    repos = await discover(FakeFetcher(load("catalog.json")), "localhost:5000", "", "catalog", scheme="http")
    assert [r.repository for r in repos] == ["library/alpine", "mirror", "mirror/a", "mirror/b/c", "mirrored/x"]


@pytest.mark.parametrize(
    "link",
    [
        '<https://evil.example/v2/_catalog?n=1000>; rel="next"',
        '<//evil.example/v2/_catalog>; rel="next"',
        '<https://localhost:5000/v2/_catalog?n=1000>; rel="next"',  # scheme change
        '<http://localhost:5001/v2/_catalog?n=1000>; rel="next"',  # port change
        '<http://user:pw@localhost:5000/v2/_catalog>; rel="next"',
    ],
)
async def test_catalog_link_to_another_server_is_refused(link: str) -> None:
    responses = {
        "http://localhost:5000/v2/_catalog?n=1000": {"body": {"repositories": ["a"]}, "headers": {"Link": link}}
    }
    with pytest.raises(DiscoveryError, match="another server"):
        await discover(FakeFetcher(responses), "localhost:5000", "", "catalog", scheme="http")


async def test_catalog_link_loop_is_refused() -> None:
    url = "http://localhost:5000/v2/_catalog?n=1000"
    responses = {url: {"body": {"repositories": []}, "headers": {"Link": f'<{url}>; rel="next"'}}}
    with pytest.raises(DiscoveryError, match="loops"):
        await discover(FakeFetcher(responses), "localhost:5000", "", "catalog", scheme="http")


async def test_catalog_ignores_non_next_links() -> None:
    url = "http://localhost:5000/v2/_catalog?n=1000"
    responses = {
        url: {
            "body": {"repositories": ["a"]},
            "headers": {"Link": '<https://elsewhere.example/doc>; rel="help"'},
        },
        "http://localhost:5000/v2/a/tags/list?n=1000": {"body": {"name": "a", "tags": ["1"]}},
    }
    repos = await discover(FakeFetcher(responses), "localhost:5000", "", "catalog", scheme="http")
    assert [(r.repository, list(r.tags)) for r in repos] == [("a", ["1"])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"repositories": "a"}, "not a list"),
        ({"repositories": ["UPPER"]}, "invalid repository name"),
        ({"repositories": ["a/../b"]}, "invalid repository name"),
        ({"repositories": ["a" * 256]}, "invalid repository name"),
        (None, "not a JSON object"),
    ],
)
async def test_catalog_malformed_bodies_are_refused(body: object, message: str) -> None:
    responses = {"http://localhost:5000/v2/_catalog?n=1000": {"body": body}}
    with pytest.raises(DiscoveryError, match=message):
        await discover(FakeFetcher(responses), "localhost:5000", "", "catalog", scheme="http")


async def test_catalog_tag_listing_failure_propagates() -> None:
    url = "http://localhost:5000/v2/mirror/b/c/tags/list?n=1000"
    fetcher = FakeFetcher(load("catalog.json"), errors={url: RegistryError("GET c: HTTP 500", status=500)})
    with pytest.raises(RegistryError, match="500"):
        await discover(fetcher, "localhost:5000", "mirror", "catalog", scheme="http")


# --- explicit list --------------------------------------------------------------------------------------


async def test_list_accepts_relative_and_full_names() -> None:
    fetcher = FakeFetcher(load("catalog.json"))
    repos = await discover(
        fetcher, "localhost:5000", "mirror", "list", repositories=["a", "mirror/b/c", "mirror/a"], scheme="http"
    )
    assert [r.repository for r in repos] == ["mirror/a", "mirror/b/c"]
    assert not any("_catalog" in url for url in fetcher.calls)


async def test_list_uses_gcr_extension_when_present() -> None:
    gcr = load("gcr.json")
    responses = {
        "https://gcr.io/v2/google-containers/pause/tags/list?n=1000": gcr[
            "https://gcr.io/v2/google-containers/pause/tags/list?n=10000"
        ]
    }
    repos = await discover(FakeFetcher(responses), "gcr.io", "google-containers", "list", repositories=["pause"])
    assert repos[0].tags["3.1"].digest == D["2"]


@pytest.mark.parametrize("bad", [["../x"], ["Upper"], ["a//b"]])
async def test_list_rejects_invalid_names(bad: list[str]) -> None:
    with pytest.raises(ConfigError, match="invalid repository"):
        await discover(FakeFetcher({}), "localhost:5000", "mirror", "list", repositories=bad)


async def test_list_without_repositories_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="repository list"):
        await discover(FakeFetcher({}), "localhost:5000", "mirror", "list")


# --- Docker Hub -----------------------------------------------------------------------------------------


async def test_dockerhub_pages_and_tag_fields() -> None:
    fetcher = FakeFetcher(load("dockerhub.json"))
    repos = await discover(fetcher, "docker.io", "gcrxio", "auto")
    assert [r.repository for r in repos] == ["gcrxio/etcd", "gcrxio/kube-proxy", "gcrxio/pause"]
    pause = by_name(repos)["gcrxio/pause"].tags
    assert list(pause) == ["3.1", "3.2"]  # both tag pages followed
    # The top-level digest, not images[].digest (per-platform children).
    assert pause["3.2"].digest == D["1"]
    assert pause["3.2"].pushed_at == datetime(2020, 8, 18, 16, 14, 37, 119000, tzinfo=UTC)
    assert pause["3.2"].size == 763789
    assert pause["3.2"].media_type == "application/vnd.oci.image.index.v1+json"
    # tag_last_pushed null: last_updated is used.
    assert pause["3.1"].pushed_at == datetime(2018, 9, 11, tzinfo=UTC)
    assert by_name(repos)["gcrxio/kube-proxy"].tags == {}


async def test_dockerhub_falls_back_to_legacy_endpoint_on_404() -> None:
    fetcher = FakeFetcher(load("dockerhub_legacy.json"))
    repos = await discover(fetcher, "docker.io", "gcrxio", "dockerhub")
    assert [(r.repository, r.tags["3.1"].digest) for r in repos] == [("gcrxio/pause", D["2"])]
    assert fetcher.calls[0].startswith("https://hub.docker.com/v2/namespaces/gcrxio/")


async def test_dockerhub_next_to_another_host_is_refused() -> None:
    hub = load("dockerhub.json")
    first = "https://hub.docker.com/v2/namespaces/gcrxio/repositories?page_size=100"
    hub[first]["body"]["next"] = "https://evil.example/v2/namespaces/gcrxio/repositories?page=2"
    with pytest.raises(DiscoveryError, match="another server"):
        await discover(FakeFetcher(hub), "docker.io", "gcrxio", "dockerhub")


async def test_dockerhub_custom_api_base() -> None:
    hub = load("dockerhub_legacy.json")
    moved = {url.replace("https://hub.docker.com", "http://127.0.0.1:8080"): v for url, v in hub.items()}
    repos = await discover(FakeFetcher(moved), "docker.io", "gcrxio", "dockerhub", api="http://127.0.0.1:8080/")
    assert [r.repository for r in repos] == ["gcrxio/pause"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.update(digest="md5:abc"), "digest"),
        (lambda t: t.update(name=None), "invalid tag"),
        (lambda t: t.update(tag_last_pushed="yesterday"), "ISO 8601"),
        (lambda t: t.update(full_size="big"), "full_size"),
    ],
)
async def test_dockerhub_malformed_tags_are_refused(mutate: Any, message: str) -> None:
    hub = load("dockerhub.json")
    mutate(
        hub["https://hub.docker.com/v2/namespaces/gcrxio/repositories/etcd/tags?page_size=100"]["body"]["results"][0]
    )
    with pytest.raises(DiscoveryError, match=message):
        await discover(FakeFetcher(hub), "docker.io", "gcrxio", "dockerhub")


async def test_dockerhub_results_must_be_a_list() -> None:
    hub = load("dockerhub.json")
    hub["https://hub.docker.com/v2/namespaces/gcrxio/repositories?page_size=100"]["body"]["results"] = {}
    with pytest.raises(DiscoveryError, match="'results' is not a list"):
        await discover(FakeFetcher(hub), "docker.io", "gcrxio", "dockerhub")


async def test_dockerhub_auth_error_propagates() -> None:
    first = "https://hub.docker.com/v2/namespaces/gcrxio/repositories?page_size=100"
    fetcher = FakeFetcher({}, errors={first: AuthError("hub: 401", status=401)})
    with pytest.raises(AuthError, match=r"hub: 401; configure docker\.io credentials"):
        await discover(fetcher, "docker.io", "gcrxio", "dockerhub")


async def test_dockerhub_namespace_is_one_component() -> None:
    with pytest.raises(ConfigError, match="single name"):
        await discover(FakeFetcher({}), "docker.io", "a/b", "dockerhub")


# --- Quay -----------------------------------------------------------------------------------------------


async def test_quay_pages_tokens_and_tag_fields() -> None:
    fetcher = FakeFetcher(load("quay.json"))
    repos = await discover(fetcher, "quay.io", "coreos", "auto")
    # The "application" (chart) repository is not an image repository.
    assert [r.repository for r in repos] == ["coreos/etcd", "coreos/flannel"]
    flannel = by_name(repos)["coreos/flannel"].tags
    assert list(flannel) == ["v0.15.1", "v0.9.1"]  # page=2 followed while has_additional
    assert flannel["v0.15.1"].digest == D["7"]
    assert flannel["v0.15.1"].pushed_at == datetime.fromtimestamp(1636000000, tz=UTC)
    assert flannel["v0.15.1"].size == 20000000
    # No start_ts: last_modified (RFC 2822, "-0000") is used; size null stays unknown.
    assert flannel["v0.9.1"].pushed_at == datetime(2017, 12, 1, tzinfo=UTC)
    assert flannel["v0.9.1"].size is None


async def test_quay_repeated_page_token_is_refused() -> None:
    quay = load("quay.json")
    second = "https://quay.io/api/v1/repository?namespace=coreos&public=true&next_page=gAAAAABl-token%3D%3D"
    quay[second]["body"]["next_page"] = "gAAAAABl-token=="
    with pytest.raises(DiscoveryError, match="loops"):
        await discover(FakeFetcher(quay), "quay.io", "coreos", "quay")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("has_additional", "yes", "has_additional"),
        ("tags", [{"name": "v1", "manifest_digest": D["1"], "last_modified": "someday"}], "RFC 2822"),
        ("tags", [{"name": "v1", "manifest_digest": D["1"], "start_ts": "x"}], "start_ts"),
        ("tags", ["v1"], "not a JSON object"),
    ],
)
async def test_quay_malformed_tags_are_refused(field: str, value: object, message: str) -> None:
    quay = load("quay.json")
    quay["https://quay.io/api/v1/repository/coreos/etcd/tag/?onlyActiveTags=true&limit=100&page=1"]["body"][field] = (
        value
    )
    with pytest.raises(DiscoveryError, match=message):
        await discover(FakeFetcher(quay), "quay.io", "coreos", "quay")


async def test_quay_tag_list_is_the_registrys_and_v1_only_adds_metadata() -> None:
    quay = load("quay.json")
    # v1 knows a tag the registry no longer lists (deleted since) and misses one (skipped by offset paging).
    quay["https://quay.io/v2/coreos/etcd/tags/list?n=1000"]["body"]["tags"] = ["v3.5.0", "v3.5.1"]
    quay["https://quay.io/api/v1/repository/coreos/etcd/tag/?onlyActiveTags=true&limit=100&page=1"]["body"][
        "tags"].append({"name": "gone", "manifest_digest": D["1"], "start_ts": 1600000000})
    etcd = by_name(await discover(FakeFetcher(quay), "quay.io", "coreos", "quay"))["coreos/etcd"].tags
    assert list(etcd) == ["v3.5.0", "v3.5.1"]
    assert etcd["v3.5.0"].digest == D["9"] and etcd["v3.5.1"].digest is None


async def test_quay_is_sparse_is_read_and_checked() -> None:
    quay = load("quay.json")
    url = "https://quay.io/api/v1/repository/coreos/flannel/tag/?onlyActiveTags=true&limit=100&page=1"
    quay[url]["body"]["tags"][0].update(is_sparse=True, child_manifest_count=3)
    flannel = by_name(await discover(FakeFetcher(quay), "quay.io", "coreos", "quay"))["coreos/flannel"].tags
    assert flannel["v0.15.1"].sparse and not flannel["v0.9.1"].sparse
    quay[url]["body"]["tags"][0]["is_sparse"] = "yes"
    with pytest.raises(DiscoveryError, match="is_sparse"):
        await discover(FakeFetcher(quay), "quay.io", "coreos", "quay")


async def test_quay_with_credentials_adds_catalog_repositories_of_the_namespace() -> None:
    quay = load("quay.json")
    quay["https://quay.io/v2/"] = {"body": {}}
    quay["https://quay.io/v2/_catalog?n=100"] = {
        "body": {"repositories": ["coreos/private"]},
        "headers": {"Link": '</v2/_catalog?n=100&next_page=gAAAAB-x>; rel="next"'}}
    quay["https://quay.io/v2/_catalog?n=100&next_page=gAAAAB-x"] = {
        "body": {"repositories": ["coreos/etcd", "other/thing"]}}
    quay["https://quay.io/v2/coreos/private/tags/list?n=1000"] = {"body": {"tags": ["v1"]}}
    fetcher = FakeFetcher(quay)
    repos = by_name(await discover(fetcher, "quay.io", "coreos", "quay", authenticated=True))
    assert sorted(repos) == ["coreos/etcd", "coreos/flannel", "coreos/private"]
    private = repos["coreos/private"].tags["v1"]
    assert private.digest is None and not private.sparse  # no v1 API call for a private repository
    assert not any("/api/v1/repository/coreos/private" in c for c in fetcher.calls)
    assert fetcher.calls.index("https://quay.io/v2/") < fetcher.calls.index("https://quay.io/v2/_catalog?n=100")


# --- GitHub packages (ghcr.io) --------------------------------------------------------------------------

GH = "https://api.github.com"


def _github(owner_kind: str = "orgs") -> dict[str, Any]:
    versions = f"{GH}/{owner_kind}/acme/packages/container/tools%2Fcli/versions?per_page=100"
    return {
        f"{GH}/{owner_kind}/acme/packages?package_type=container&per_page=100": {
            "body": [{"name": "tools/cli", "package_type": "container"}, {"name": "lib", "package_type": "npm"}],
            "headers": {"Link": f'<{GH}/organizations/7/packages?package_type=container&page=2>; rel="next"'}},
        f"{GH}/organizations/7/packages?package_type=container&page=2": {
            "body": [{"name": "app", "package_type": "container"}]},
        versions: {"body": [
            {"name": D["1"], "updated_at": "2026-11-02T10:00:00Z", "metadata": {"container": {"tags": ["v2"]}}},
            {"name": D["2"], "metadata": {"container": {"tags": []}}},  # an untagged platform child
        ], "headers": {"Link": f'<{GH}/{owner_kind}/acme/packages/container/tools%2Fcli/versions?page=2>; rel="next"'}},
        f"{GH}/{owner_kind}/acme/packages/container/tools%2Fcli/versions?page=2": {"body": [
            {"name": D["3"], "created_at": "2026-10-01T00:00:00+00:00",
             "metadata": {"package_type": "container", "container": {"tags": ["v1", "v2"]}}}]},
        f"{GH}/{owner_kind}/acme/packages/container/app/versions?per_page=100": {"body": []},
    }


async def test_ghcr_lists_packages_and_tags_with_digests() -> None:
    repos = by_name(await discover(FakeFetcher(_github()), "ghcr.io", "acme", "auto", authenticated=True))
    assert sorted(repos) == ["acme/app", "acme/tools/cli"]  # the npm package is not an image
    cli = repos["acme/tools/cli"].tags
    assert list(cli) == ["v1", "v2"]
    assert cli["v2"].digest == D["1"]  # newest first: the tag's current version wins
    assert cli["v2"].pushed_at == datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert cli["v1"].digest == D["3"] and cli["v1"].pushed_at == datetime(2026, 10, 1, tzinfo=UTC)
    assert repos["acme/app"].tags == {}


async def test_ghcr_user_namespace_after_org_404() -> None:
    fetcher = FakeFetcher(_github("users"))
    repos = await discover(fetcher, "ghcr.io", "acme", "ghcr", authenticated=True)
    assert [r.repository for r in repos] == ["acme/app", "acme/tools/cli"]
    assert fetcher.calls[0].startswith(f"{GH}/orgs/acme/packages")


async def test_ghcr_without_a_token_fails_before_any_request() -> None:
    fetcher = FakeFetcher(_github())
    with pytest.raises(AuthError, match="token_env"):
        await discover(fetcher, "ghcr.io", "acme", "ghcr")
    assert fetcher.calls == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "not-a-digest", "metadata": {}}, "version name"),
        ({"metadata": {"container": {"tags": ["v1"]}}}, "no digest"),
        ({"name": D["1"], "metadata": {"container": {"tags": "v1"}}}, "tags"),
        ({"name": D["1"], "metadata": {"container": {"tags": ["Bad Tag"]}}}, "invalid tag"),
        ({"name": D["1"], "updated_at": "yesterday", "metadata": {}}, "ISO 8601"),
    ],
)
async def test_ghcr_malformed_versions_are_refused(entry: dict[str, Any], message: str) -> None:
    github = _github()
    github[f"{GH}/orgs/acme/packages/container/app/versions?per_page=100"]["body"] = [entry]
    with pytest.raises(DiscoveryError, match=message):
        await discover(FakeFetcher(github), "ghcr.io", "acme", "ghcr", authenticated=True)


async def test_ghcr_link_to_another_host_is_refused() -> None:
    github = _github()
    github[f"{GH}/orgs/acme/packages?package_type=container&per_page=100"]["headers"]["Link"] = (
        '<https://evil.example/orgs/acme/packages?page=2>; rel="next"')
    with pytest.raises(DiscoveryError, match="another server"):
        await discover(FakeFetcher(github), "ghcr.io", "acme", "ghcr", authenticated=True)


# --- arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "namespace", "method", "message"),
    [
        ("gcr.io/evil", "ns", "gcr", "registry host"),
        ("user@gcr.io", "ns", "gcr", "registry host"),
        ("gcr.io", "Bad", "gcr", "invalid namespace"),
        ("gcr.io", "a/../b", "gcr", "invalid namespace"),
        ("gcr.io", "ns", "bogus", "unknown discovery method"),
    ],
)
async def test_bad_arguments_are_config_errors(host: str, namespace: str, method: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await discover(FakeFetcher({}), host, namespace, method)


@pytest.mark.parametrize(("recorded", "namespace", "later_page"), [
    ("catalog.json", "localhost:5000/mirror", "http://localhost:5000/v2/_catalog?last=mirror%2Fa&n=1000"),
    ("catalog.json", "localhost:5000/mirror", "http://localhost:5000/v2/mirror/a/tags/list?last=v2&n=1000"),
    ("dockerhub.json", "docker.io/gcrxio",
     "https://hub.docker.com/v2/namespaces/gcrxio/repositories?page=2&page_size=100"),
    ("dockerhub.json", "docker.io/gcrxio",
     "https://hub.docker.com/v2/namespaces/gcrxio/repositories/pause/tags?page=2&page_size=100"),
    ("quay.json", "quay.io/coreos",
     "https://quay.io/api/v1/repository?namespace=coreos&public=true&next_page=gAAAAABl-token%3D%3D"),
    ("quay.json", "quay.io/coreos",
     "https://quay.io/api/v1/repository/coreos/flannel/tag/?onlyActiveTags=true&limit=100&page=2"),
])
async def test_a_404_on_a_later_page_is_an_error_not_the_end(recorded: str, namespace: str,
                                                             later_page: str) -> None:
    """A listing cut short by a 404 after its first page would look like images removed upstream."""
    responses = load(recorded)
    assert later_page in responses
    del responses[later_page]  # the FakeFetcher answers it with a 404
    host, _, ns = namespace.partition("/")
    with pytest.raises(NotFound):
        await discover(FakeFetcher(responses), host, ns, "auto", scheme="http" if host.startswith("localhost")
                       else "https")
