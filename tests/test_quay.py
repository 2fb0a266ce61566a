"""quay.io behaviour end to end, through the quay personality (tests/personalities/quay.py) in front of a
real registry and the real CLI: complete tag lists from the cursor-paged `tags/list` even when the v1 API's
offset pages skip a tag, `_catalog` with robot credentials, sparse manifest lists, quay's error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image

from gcrsync.cli import main
from harness import RegistryServer, skopeo_digest, skopeo_raw, unique_repo
from personalities.quay import QuayPersonality, make_sparse_index


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state"), **extra}


def _config(tmp_path: Path, quay: QuayPersonality, **registry: str) -> Path:
    path = tmp_path / "gcrsync.yaml"
    entry = {"api": quay.url, **registry}
    path.write_text(json.dumps({"version": 1, "registries": {quay.host: entry}}))
    return path


def _sync(tmp_path: Path, quay: QuayPersonality, ns: str, dest: str, *args: str,
          env: dict[str, str] | None = None, **registry: str) -> tuple[Any, dict[str, Any]]:
    report = tmp_path / f"report-{dest.replace('/', '_').replace(':', '_')}.json"
    result = CliRunner().invoke(main, ["sync", "-c", str(_config(tmp_path, quay, **registry)),
                                       f"{quay.host}/{ns}", "--dest", dest, "--discovery", "quay",
                                       "--report", str(report), *args], env=env or _env(tmp_path))
    return result, (json.loads(report.read_text()) if report.exists() else {})


def _images(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {img["source"].split("/", 1)[1]: img for img in report["images"]}


@pytest.fixture
def quay(registry: RegistryServer) -> Iterator[QuayPersonality]:
    with QuayPersonality(registry, v1_page_size=3, v2_page_size=2, repo_page_size=1,
                         robots={}) as front:
        yield front


def test_cursor_listing_is_complete_where_v1_offset_pages_skip_a_tag(
        quay: QuayPersonality, registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("quayns")
    repo = f"{ns}/app"
    layer = make_layer(301, 500)
    digests = {}
    for n in range(1, 8):  # t1 (oldest) … t7 (newest), each its own digest
        digests[f"t{n}"], _ = push_image(registry.pusher(), repo, f"t{n}", layers=[layer], labels={"n": str(n)})
        quay.start_ts[(repo, f"t{n}")] = 1_700_000_000 + n
    push_image(registry.pusher(), f"{ns}/other", "v1", layers=[layer], labels={"other": "1"})

    deleted: list[str] = []

    def delete_newest_after_first_page(name: str, page: int) -> None:
        # While the v1 walk is between pages 1 and 2, t7 (on page 1) is deleted: page 2 starts one
        # later, so t4 is on neither page - quay's offset paging skips it.
        if name == repo and page == 1 and not deleted:
            registry.pusher().delete_manifest(repo, digests["t7"])
            deleted.append("t7")

    quay.on_v1_page = delete_newest_after_first_page
    result, report = _sync(tmp_path, quay, ns, f"{registry2.host}/qm")
    assert result.exit_code == 0, result.output
    images = _images(report)
    v1_pages = [p for _, p, _ in quay.seen if p.startswith(f"/api/v1/repository/{repo}/tag/")]
    assert len(v1_pages) == 2 and deleted == ["t7"]  # the walk did straddle the deletion
    # Complete and current: t4 (skipped by the v1 pages) is mirrored, t7 (deleted) is not listed.
    assert sorted(images) == [f"{ns}/app:t{n}" for n in range(1, 7)] + [f"{ns}/other:v1"]
    assert {img["state"] for img in images.values()} == {"copied"}
    assert skopeo_digest(registry2.ref("qm/app", "t4")) == digests["t4"]
    # The cursor listing was paged (n capped at 2: 3 pages for 6 tags) and the repository list by token.
    tag_pages = [p for _, p, _ in quay.seen if p.startswith(f"/v2/{repo}/tags/list")]
    assert tag_pages[1:] == [f"/v2/{repo}/tags/list?n=2&last=t2", f"/v2/{repo}/tags/list?n=2&last=t4"]
    assert any("next_page=" in p for _, p, _ in quay.seen if p.startswith("/api/v1/repository?"))
    # Digests came from the v1 metadata: only the tag the v1 walk skipped needed a HEAD at the source.
    heads = [p for m, p, _ in quay.seen if m == "HEAD" and f"/v2/{repo}/manifests/" in p]
    assert heads == [f"/v2/{repo}/manifests/t4"]


def test_sparse_manifest_list_is_mirrored_with_the_children_that_exist(
        quay: QuayPersonality, registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("quaysp")
    digest, present, absent = make_sparse_index(registry.pusher(), f"{ns}/multi", "v1", absent=[1], seed=302)
    single, _ = push_image(registry.pusher(), f"{ns}/single", "v1", layers=[make_layer(303, 400)])
    result, report = _sync(tmp_path, quay, ns, f"{registry2.host}/sp")
    assert result.exit_code == 0, result.output
    assert "1 sparse (children absent at the source)" in result.output
    images = _images(report)
    multi = images[f"{ns}/multi:v1"]
    assert (multi["state"], multi["sparse_children_missing"]) == ("copied", 1)
    assert images[f"{ns}/single:v1"]["sparse_children_missing"] == 0
    # distribution refuses an index with absent children, so the target holds the list of those present.
    mirrored = json.loads(skopeo_raw(registry2.ref("sp/multi", "v1")))
    assert [m["digest"] for m in mirrored["manifests"]] == present
    assert multi["source_digest"] == digest and multi["digest"] != digest
    for child in present:
        assert skopeo_digest(registry2.ref("sp/multi", child)) == child
    assert skopeo_digest(registry2.ref("sp/single", "v1")) == single

    # The next run knows that mirror is current (no re-push, no "updated" every day).
    again, report2 = _sync(tmp_path, quay, ns, f"{registry2.host}/sp")
    assert again.exit_code == 0, again.output
    assert {img["state"] for img in report2["images"]} == {"unchanged"}

    # A platform filter that selects only present children is a plain filtered copy.
    filtered, report3 = _sync(tmp_path, quay, ns, f"{registry2.host}/spf", "--platform", "linux/amd64")
    assert filtered.exit_code == 0, filtered.output
    assert _images(report3)[f"{ns}/multi:v1"]["sparse_children_missing"] == 0

    # Without the source saying the list is sparse, an absent child is an error, never skipped.
    copy = CliRunner().invoke(main, ["copy", f"{quay.host}/{ns}/multi:v1", f"{registry2.host}/sp-copy:v1"],
                              env=_env(tmp_path))
    assert copy.exit_code != 0
    assert absent[0] in copy.output and "MANIFEST_UNKNOWN" in copy.output


def test_catalog_with_robot_credentials_adds_private_repositories(
        registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("quayrb")
    layer = make_layer(304, 300)
    push_image(registry.pusher(), f"{ns}/public", "v1", layers=[layer], labels={"p": "1"})
    secret, _ = push_image(registry.pusher(), f"{ns}/secret", "v1", layers=[layer], labels={"p": "2"})
    robot = f"{ns}+mirror"
    with QuayPersonality(registry, robots={robot: "robot-pw-1"}) as quay:
        quay.private.add(f"{ns}/secret")
        anonymous, report = _sync(tmp_path, quay, ns, f"{registry2.host}/rb-anon")
        assert anonymous.exit_code == 0, anonymous.output
        assert sorted(_images(report)) == [f"{ns}/public:v1"]
        assert not any(p.startswith("/v2/_catalog") for _, p, _ in quay.seen)

        env = _env(tmp_path, QUAY_ROBOT="robot-pw-1", QUAY_USER=robot)
        robot_run, report = _sync(tmp_path, quay, ns, f"{registry2.host}/rb", env=env,
                                  username_env="QUAY_USER", password_env="QUAY_ROBOT")
        assert robot_run.exit_code == 0, robot_run.output
        assert sorted(_images(report)) == [f"{ns}/public:v1", f"{ns}/secret:v1"]
        catalog = [auth for _, p, auth in quay.seen if p.startswith("/v2/_catalog")]
        assert catalog and all(auth is not None and auth.startswith("Bearer ") for auth in catalog)
    assert skopeo_digest(registry2.ref("rb/secret", "v1")) == secret


def test_quay_error_body_reaches_the_error_line(quay: QuayPersonality, registry: RegistryServer,
                                                registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("quayer")
    push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(305, 300)])
    # quay's own refusal, e.g. a repository turned private between the listing and its tags.
    quay.v1_errors[f"{ns}/app"] = (403, "Unauthorized")
    result, report = _sync(tmp_path, quay, ns, f"{registry2.host}/er")
    assert result.exit_code != 0
    assert report["namespaces"][0]["error"] is not None
    assert "HTTP 403: Unauthorized" in report["namespaces"][0]["error"]


def test_sparse_list_into_an_oci_layout(quay: QuayPersonality, registry: RegistryServer, tmp_path: Path) -> None:
    """An OCI layout refuses dangling references like a registry does: it gets the list of present children."""
    ns = unique_repo("quayol")
    digest, present, _ = make_sparse_index(registry.pusher(), f"{ns}/multi", "v2", absent=[0, 2], seed=306)
    result, report = _sync(tmp_path, quay, ns, f"oci:{tmp_path / 'layout'}")
    assert result.exit_code == 0, result.output
    [image] = report["images"]
    assert (image["state"], image["sparse_children_missing"], image["source_digest"]) == ("copied", 2, digest)
    layout = tmp_path / "layout" / "multi"
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["digest"] == image["digest"] != digest
    mirrored = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())
    assert [m["digest"] for m in mirrored["manifests"]] == present
    assert all((layout / "blobs" / "sha256" / child.split(":")[1]).is_file() for child in present)


async def test_a_404_child_is_skipped_only_for_the_index_declared_sparse(registry: RegistryServer,
                                                                        registry2: RegistryServer) -> None:
    """The engine's rule, whatever the listing: `sparse` names index digests; a 404 child of any other
    index (a different digest at the tag, or none declared) fails the image and pushes no index."""
    from gcrsync.engine.blobs import BlobMover
    from gcrsync.engine.copy import CopyOptions, copy_image
    from gcrsync.errors import NotFound
    from gcrsync.registry.client import RegistryClient
    from gcrsync.registry.credentials import CredentialStore
    from gcrsync.registry.transport import Transport, TransportOptions

    repo = unique_repo("sparse-engine")
    digest, present, absent = make_sparse_index(registry.pusher(), repo, "v1", absent=[2], seed=307)
    async with Transport(TransportOptions(max_attempts=1)) as transport:
        client = RegistryClient(transport, CredentialStore(use_docker_config=False))
        src = client.repository(registry.host, repo)
        for declared in (frozenset(), frozenset({"sha256:" + "0" * 64})):
            with pytest.raises(ExceptionGroup) as caught:
                await copy_image(src, "v1", client.repository(registry2.host, repo), "v1", BlobMover(4),
                                 CopyOptions(sparse=declared))
            assert caught.group_contains(NotFound)
            assert await client.repository(registry2.host, repo).head_manifest("v1") is None
        result = await copy_image(src, "v1", client.repository(registry2.host, repo), "v1", BlobMover(4),
                                  CopyOptions(sparse=frozenset({digest})))
    assert (result.sparse_children_missing, result.source_digest) == (1, digest)
    assert result.subjects == present  # neither the absent child nor the source index (not at the target)
    assert [m["digest"] for m in json.loads(skopeo_raw(registry2.ref(repo, "v1")))["manifests"]] == present
    assert absent[0] not in skopeo_raw(registry2.ref(repo, "v1")).decode()
