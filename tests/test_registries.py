"""The public registries as they behave today, end to end through their behavioural fixtures
(tests/personalities/) and the real CLI: Docker Hub, Artifact Registry / gcr.io, registry.k8s.io."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from tools.imagefactory import DOCKER_MANIFEST, make_layer, push_image, push_index

from gcrsync.cli import main
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from harness import RegistryServer, skopeo_digest, unique_repo
from personalities.artifactregistry import ArtifactRegistry, K8sFront
from personalities.dockerhub import CAP_MESSAGE, DockerHubApi

BIG = 1200  # tags in one Docker Hub repository: past the anonymous paging cap of 1000


def run(tmp_path: Path, *args: str, config: dict[str, Any] | None = None) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    extra: list[str] = []
    if config is not None:
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        extra = ["-c", str(path)]
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = CliRunner().invoke(main, ["sync", *args, *extra, "--report", str(report)], env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, result.output, data


def copied(report: dict[str, Any]) -> set[str]:
    return {i["target"] for i in report.get("images", []) if i["state"] == "copied"}


# --- Docker Hub --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, DockerHubApi]]:
    """A namespace `lib` with a 1,200-tag repository, a small one and a private one, behind a Hub API."""
    from harness import start_registry

    server = start_registry(tmp_path_factory.mktemp("hub-registry"))
    pusher = server.pusher()
    _, raw = push_image(pusher, "lib/big", "t0000", layers=[make_layer(1501, 2_000)])
    for i in range(1, BIG):
        pusher.push_manifest("lib/big", f"t{i:04d}", raw, DOCKER_MANIFEST)
    push_image(pusher, "lib/small", "1.0", layers=[make_layer(1502, 2_000)])
    push_image(pusher, "lib/secret", "1.0", layers=[make_layer(1503, 2_000)])
    hub = DockerHubApi(server.url, users={"hubuser": "pat-9f8e7d"}, private={"lib/secret"}).start()
    yield server, hub
    hub.stop()
    server.stop()


def hub_config(server: RegistryServer, hub: DockerHubApi, *, creds: bool) -> dict[str, Any]:
    reg: dict[str, Any] = {"api": hub.url}
    if creds:
        reg.update(username="hubuser", password="pat-9f8e7d")
    return {"registries": {server.host: reg}}


def test_hub_namespace_past_the_anonymous_cap_is_mirrored_completely_without_credentials(
    hub_source: tuple[RegistryServer, DockerHubApi], make_registry: Any, tmp_path: Path,
) -> None:
    server, hub = hub_source
    target: RegistryServer = make_registry()
    before = hub.stats["anonymous-cap"]
    code, out, report = run(tmp_path, f"{server.host}/lib", "--dest", f"{target.host}/m", "--discovery",
                            "dockerhub", "--jobs", "8", config=hub_config(server, hub, creds=False))
    assert code == 0, out
    assert hub.stats["anonymous-cap"] > before  # the API refused page 11; the registry's tags/list took over
    targets = copied(report)
    assert len([t for t in targets if t.startswith(f"{target.host}/m/big:")]) == BIG
    assert f"{target.host}/m/small:1.0" in targets
    assert not [t for t in targets if "/m/secret" in t]  # anonymous: the API does not show private repositories
    assert "without Docker Hub credentials: private repositories are not shown" in out  # and the run says so
    assert sorted(target.pusher().list_tags("m/big")) == sorted(f"t{i:04d}" for i in range(BIG))


def test_hub_namespace_with_credentials_lists_private_repositories_and_pages_past_the_cap(
    hub_source: tuple[RegistryServer, DockerHubApi], make_registry: Any, tmp_path: Path,
) -> None:
    server, hub = hub_source
    target: RegistryServer = make_registry()
    cap_before, logins_before = hub.stats["anonymous-cap"], hub.stats["login"]
    code, out, report = run(tmp_path, f"{server.host}/lib", "--dest", f"{target.host}/m", "--discovery",
                            "dockerhub", "--dry-run", config=hub_config(server, hub, creds=True))
    assert code == 0, out
    planned = {i["target"] for i in report["images"] if i["state"] == "new"}
    assert len(planned) == BIG + 2 and f"{target.host}/m/secret:1.0" in planned
    assert hub.stats["anonymous-cap"] == cap_before and hub.stats["login"] == logins_before + 1
    # The listing carried every digest: the plan HEADed no source tag.
    assert all(i["source_digest"] for i in report["images"])
    code, out, report = run(tmp_path, f"{server.host}/lib", "--dest", f"{target.host}/m", "--discovery",
                            "dockerhub", config=hub_config(server, hub, creds=True))
    assert code == 0, out
    assert skopeo_digest(target.ref("m/secret", "1.0")) == skopeo_digest(server.ref("lib/secret", "1.0"))
    assert len(target.pusher().list_tags("m/big")) == BIG


def test_hub_api_token_that_expires_mid_listing_is_renewed(
    hub_source: tuple[RegistryServer, DockerHubApi], registry2: RegistryServer, tmp_path: Path,
) -> None:
    server, _ = hub_source
    with DockerHubApi(server.url, users={"hubuser": "pat-9f8e7d"}, private={"lib/secret"}, token_uses=4) as hub:
        code, out, report = run(tmp_path, f"{server.host}/lib", "--dest", f"{registry2.host}/{unique_repo('exp')}",
                                "--discovery",
                                "dockerhub", "--dry-run", "--include", "t000.|1.0",
                                config=hub_config(server, hub, creds=True))
        assert code == 0, out
        assert hub.stats["expired"] >= 1 and hub.stats["login"] >= 2  # refused once, logged in again
        assert {i["target"].rsplit("/", 1)[1] for i in report["images"]} >= {"secret:1.0", "small:1.0", "big:t0009"}


def test_hub_refusal_carries_the_services_own_message(
    hub_source: tuple[RegistryServer, DockerHubApi], tmp_path: Path,
) -> None:
    server, hub = hub_source
    config = hub_config(server, hub, creds=True)
    config["registries"][server.host]["password"] = "wrong"
    code, out, _ = run(tmp_path, f"{server.host}/lib", "--dest", "127.0.0.1:9/m", "--discovery", "dockerhub",
                       "--dry-run", config=config)
    assert code != 0
    assert "Incorrect authentication credentials" in out and "Traceback" not in out


def test_hub_anonymous_cap_message_is_reproduced(hub_source: tuple[RegistryServer, DockerHubApi]) -> None:
    import urllib.error
    import urllib.request

    _, hub = hub_source
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{hub.url}/v2/namespaces/lib/repositories/big/tags?page=11&page_size=100")
    assert info.value.code == 403 and json.loads(info.value.read())["message"] == CAP_MESSAGE


# --- Artifact Registry / gcr.io ----------------------------------------------------------------------------


def fill_nested(server: RegistryServer) -> dict[str, str]:
    pusher = server.pusher()
    out = {}
    for i, name in enumerate(["pause", "kube/proxy", "kube/apiserver", "kube/tools/debug"]):
        out[f"{name}:v1"] = push_image(pusher, name, "v1", layers=[make_layer(1600 + i, 3_000)])[0]
    out["multi:1.0"] = push_index(pusher, "multi", "1.0", [("linux", "amd64", None), ("linux", "arm64", "v8")],
                                  2_000, seed=1610)
    return out


def test_artifact_registry_namespace_is_mirrored_from_its_listing(make_registry: Any, tmp_path: Path) -> None:
    source: RegistryServer = make_registry()
    expected = fill_nested(source)
    target: RegistryServer = make_registry()
    with ArtifactRegistry(source.url, prefix="proj/images") as ar:
        code, out, _ = run(tmp_path, f"{ar.host}/proj/images", "--dest", f"{target.host}/m",
                                "--naming", "preserve", "--discovery", "gcr")
        assert code == 0, out
        assert ar.stats["HEAD other"] == 0  # digests came from the listing: no HEAD per source tag
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert skopeo_digest(target.ref(f"m/{name}", tag)) == digest


def test_artifact_registry_list_at_the_silent_cap_fails_clearly(make_registry: Any, tmp_path: Path) -> None:
    source: RegistryServer = make_registry()
    push_image(source.pusher(), "huge", "v1", layers=[make_layer(1620, 1_000)])
    push_image(source.pusher(), "fine", "v1", layers=[make_layer(1621, 1_000)])
    target: RegistryServer = make_registry()
    with ArtifactRegistry(source.url, extra_tags={"huge": 10_000}) as ar:
        code, out, _ = run(tmp_path, ar.host, "--dest", f"{target.host}/m", "--discovery", "gcr")
    assert code != 0
    assert "10000 entries" in out and "may be incomplete" in out and "Traceback" not in out
    assert not [r for r in target.requests() if r.method in ("PUT", "POST")]  # nothing mirrored from a partial list


# --- registry.k8s.io ----------------------------------------------------------------------------------------


def test_k8s_front_mirrors_a_nested_namespace_through_its_redirects(make_registry: Any, tmp_path: Path) -> None:
    source: RegistryServer = make_registry()
    expected = fill_nested(source)
    target: RegistryServer = make_registry()
    prefix = "k8s-artifacts-prod/images"
    with ArtifactRegistry(source.url, prefix=prefix) as ar, K8sFront(ar.url, prefix=prefix) as front:
        code, out, report = run(tmp_path, front.host, "--dest", f"{target.host}/k8s", "--naming", "preserve",
                                "--discovery", "gcr")
        assert code == 0, out
        assert front.stats["redirect"] > 0 and front.stats["catalog"] == 0
        assert ar.stats["GET other"] > 0  # manifests and blobs were served behind the redirect
    assert len(copied(report)) == len(expected)
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert skopeo_digest(target.ref(f"k8s/{name}", tag)) == digest


async def test_pagination_after_a_redirect_follows_links_from_the_host_that_answered(
    registry: RegistryServer,
) -> None:
    """The front redirects tags/list to a backend that pages by 2 and sends relative Links: resolved against
    the front, they would loop back to its first page; resolved against the backend, they complete."""
    repo = unique_repo("paged")
    _, raw = push_image(registry.pusher(), repo, "a", layers=[make_layer(1630, 1_000)])
    for tag in ("b", "c", "d", "e"):
        registry.pusher().push_manifest(repo, tag, raw, DOCKER_MANIFEST)
    with K8sFront(registry.url, redirect_query="n=2") as front:
        async with Transport(TransportOptions(max_attempts=1)) as transport:
            client = RegistryClient(transport, CredentialStore(use_docker_config=False))
            repos = await client.list_namespace(front.host, repo, "list", repositories=[repo])
    assert [list(r.tags) for r in repos] == [["a", "b", "c", "d", "e"]]


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}',
     "DENIED: requested access to the resource is denied"),
    (b'{"message": "pagination offset too large for anonymous requests"}',
     "HTTP 403: pagination offset too large for anonymous requests"),  # Docker Hub
    (b'{"detail": "Incorrect authentication credentials."}', "HTTP 403: Incorrect authentication credentials."),
    (b'{"error_message": "Unauthorized", "detail": "Unauthorized"}', "HTTP 403: Unauthorized"),  # quay
    (b'{"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"}',
     "HTTP 403: Requires authentication"),  # GitHub
    (b"<html>forbidden</html>", "HTTP 403"),
])
def test_service_error_bodies_reach_the_one_line_error(body: bytes, expected: str) -> None:
    from gcrsync.registry.errors import registry_error

    assert str(registry_error("GET x", 403, body)) == f"GET x: {expected}"


def test_a_docker_hub_target_is_checked_from_its_listing_not_a_head_per_tag(
    make_registry: Any, tmp_path: Path,
) -> None:
    """A target whose listing carries digests (the Docker Hub API, with credentials): one listing per
    repository gives every tag's real digest, so even a full verification costs no HEAD per tag, and a
    tag re-pointed at the target is noticed in every run (presence alone would not)."""
    source: RegistryServer = make_registry()
    _, raw = push_image(source.pusher(), "ns/app", "t00", layers=[make_layer(1640, 1_000)])
    tags = [f"t{i:02d}" for i in range(30)]
    for tag in tags[1:]:
        source.pusher().push_manifest("ns/app", tag, raw, DOCKER_MANIFEST)
    target: RegistryServer = make_registry()
    with DockerHubApi(target.url, users={"hubuser": "pat-1"}) as hub:
        config = {"registries": {target.host: {"api": hub.url, "discovery": "dockerhub", "username": "hubuser",
                                               "password": "pat-1"}}}
        args = (f"{source.host}/ns", "--dest", f"{target.host}/m", "--metadata", str(tmp_path / "meta"))
        code, out, _ = run(tmp_path, *args, config=config)
        assert code == 0, out
        code, out, report = run(tmp_path, *args, "--verify-target", config=config)
        assert code == 0 and report["totals"]["states"] == {"unchanged": len(tags)}, out
        listed = report["totals"]["requests"]
        # The same full verification without the listing's digests: a HEAD per target tag.
        plain = {"registries": {target.host: {}}}
        code, out, report = run(tmp_path, *args, "--verify-target", config=plain)
        assert code == 0 and report["totals"]["states"] == {"unchanged": len(tags)}, out
        assert report["totals"]["requests"] - listed >= len(tags) - 2 and hub.stats["tags"] >= 1
        # Someone re-points a mirrored tag at the target: the next (default) run sees it and repairs it.
        push_image(target.pusher(), "m/app", "t05", layers=[make_layer(1641, 1_000)])
        code, out, report = run(tmp_path, *args, config=config)
        assert code == 0, out
        assert {i["target"].rsplit(":", 1)[1] for i in report["images"] if i["state"] == "copied"} == {"t05"}
    assert skopeo_digest(target.ref("m/app", "t05")) == skopeo_digest(source.ref("ns/app", "t05"))
