"""Referrers in an OCI layout: signatures and SBOMs copied into a layout are untagged roots of index.json
(as oras and zot keep them), are listed as a registry's referrers API would list them, travel on from the
layout to a registry, and go with their image when prune removes its last tag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import SPDX_JSON, make_layer, push_image

from gcrsync.cli import main
from gcrsync.engine.artifacts import ArtifactPolicy, copy_attached
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.layout import REF_NAME, LayoutRepository
from gcrsync.layout import index as index_module
from gcrsync.oci import OCI_INDEX, OCI_MANIFEST, Manifest, fallback_tag, parse_manifest, sha256_digest
from gcrsync.registry.client import RegistryClient
from harness import RegistryServer, unique_repo
from personalities.referrers import ReferrersRegistry
from test_artifacts import attach_all, referrer_digests
from test_layout import put_bytes, put_image, put_index
from test_sync import run_sync

SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@pytest.fixture
def native(registry: RegistryServer) -> Iterator[ReferrersRegistry]:
    with ReferrersRegistry(registry.url) as front:
        yield front


def untagged(path: Path) -> list[dict[str, Any]]:
    return [e for e in json.loads((path / "index.json").read_text())["manifests"]
            if REF_NAME not in e.get("annotations", {})]


def tags(path: Path) -> list[str]:
    return [e["annotations"][REF_NAME] for e in json.loads((path / "index.json").read_text())["manifests"]
            if REF_NAME in e.get("annotations", {})]


async def put_referrer(repo: LayoutRepository, subject: Manifest, seed: str, artifact_type: str = SIG_TYPE) -> Manifest:
    """A cosign-shaped signature of `subject`, pushed by digest as the engine pushes referrers."""
    payload = await put_bytes(repo, "application/vnd.dev.cosign.simplesigning.v1+json", seed.encode())
    empty = await put_bytes(repo, "application/vnd.oci.empty.v1+json", b"{}")
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
           "config": {"mediaType": empty.media_type, "digest": empty.digest, "size": empty.size},
           "layers": [{"mediaType": payload.media_type, "digest": payload.digest, "size": payload.size}],
           "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.raw)},
           "annotations": {"seed": seed}}
    manifest = parse_manifest(json.dumps(doc).encode())
    await repo.put_manifest(manifest.digest, manifest)
    return manifest


def blob_exists(repo: LayoutRepository, digest: str) -> bool:
    return (repo.path / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()


async def test_a_referrer_is_an_untagged_root_listed_like_the_api_lists_it(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    image = await put_image(repo, "v1", "img")
    sig = await put_referrer(repo, image, "sig-1")
    sbom = await put_referrer(repo, image, "sbom-1", SPDX_JSON)
    assert await repo.has_referrers_api()
    assert [e["digest"] for e in untagged(repo.path)] == [sig.digest, sbom.digest]
    assert untagged(repo.path)[0] == {"mediaType": OCI_MANIFEST, "digest": sig.digest, "size": len(sig.raw),
                                      "artifactType": SIG_TYPE}
    listed = await repo.referrers(image.digest)
    assert listed is not None and [r["digest"] for r in listed] == [sig.digest, sbom.digest]
    assert listed[0]["artifactType"] == SIG_TYPE and listed[0]["annotations"] == {"seed": "sig-1"}
    assert [r["digest"] for r in await repo.referrers(image.digest, SPDX_JSON) or []] == [sbom.digest]
    assert await repo.referrers(sig.digest) == []
    assert await repo.list_tags() == ["v1"]  # referrers are not tags
    before = (repo.path / "index.json").read_bytes()
    await repo.put_manifest(sig.digest, sig)  # pushed again: no second entry
    assert (repo.path / "index.json").read_bytes() == before


async def test_a_fallback_tag_written_by_another_tool_is_read_too(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    image = await put_image(repo, "v1", "img")
    other = await put_image(repo, None, "other-tools-signature")
    entry = {"mediaType": other.media_type, "digest": other.digest, "size": len(other.raw), "artifactType": "x/y"}
    index = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode())
    await repo.put_manifest(fallback_tag(image.digest), index)
    sig = await put_referrer(repo, image, "sig")
    listed = await repo.referrers(image.digest) or []
    assert [r["digest"] for r in listed] == [sig.digest, other.digest]
    assert await repo.fallback_referrers(image.digest) == ([entry], index.digest)


async def test_prune_takes_an_images_referrers_with_it_and_nothing_else(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    gone, kept = await put_image(repo, "v1", "gone"), await put_image(repo, "v2", "kept")
    sig = await put_referrer(repo, gone, "sig-of-gone")
    sig_of_sig = await put_referrer(repo, sig, "sig-of-sig")
    sig_kept = await put_referrer(repo, kept, "sig-of-kept")
    assert await repo.remove_tag("v1", gone.digest)
    assert tags(repo.path) == ["v2"]
    assert [e["digest"] for e in untagged(repo.path)] == [sig_kept.digest]
    for manifest in (gone, sig, sig_of_sig):
        assert not blob_exists(repo, manifest.digest)
    for desc in (*sig.blobs, *sig_of_sig.blobs):  # their payloads went; the empty config is shared with...
        assert blob_exists(repo, desc.digest) == (desc.digest in {d.digest for d in sig_kept.blobs})
    assert blob_exists(repo, kept.digest) and blob_exists(repo, sig_kept.digest)
    assert [r["digest"] for r in await repo.referrers(kept.digest) or []] == [sig_kept.digest]


async def test_prune_keeps_the_referrers_of_an_image_another_tag_still_names(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    image = await put_image(repo, "v1", "shared")
    await repo.put_manifest("also", image)
    sig = await put_referrer(repo, image, "sig")
    assert await repo.remove_tag("v1", image.digest)
    assert tags(repo.path) == ["also"] and [e["digest"] for e in untagged(repo.path)] == [sig.digest]
    assert blob_exists(repo, sig.digest) and blob_exists(repo, image.digest)


async def test_prune_takes_the_referrers_of_an_index_child_unless_another_tag_reaches_it(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    index = await put_index(repo, "v1")
    first, second = [await repo.get_manifest(child.digest) for child in index.children]
    sig_first, sig_second = await put_referrer(repo, first, "a"), await put_referrer(repo, second, "b")
    await repo.put_manifest("amd64-only", first)  # another tag reaches the first child
    assert await repo.remove_tag("v1", index.digest)
    assert [e["digest"] for e in untagged(repo.path)] == [sig_first.digest]
    assert blob_exists(repo, sig_first.digest) and not blob_exists(repo, sig_second.digest)
    assert not blob_exists(repo, index.digest) and not blob_exists(repo, second.digest)


async def test_prune_keeps_every_referrer_when_what_remains_cannot_be_read(tmp_path: Path) -> None:
    # Partial information: a remaining manifest is unreadable, so what it reaches (perhaps the image) is
    # unknown. The tag goes; no referrer and no blob does.
    repo = LayoutRepository(tmp_path / "layout", create=True)
    gone, other = await put_image(repo, "v1", "gone"), await put_image(repo, "v2", "other")
    sig = await put_referrer(repo, gone, "sig")
    (repo.path / "blobs" / "sha256" / other.digest.split(":")[1]).write_bytes(b"not a manifest")
    before = {p.name for p in (repo.path / "blobs" / "sha256").iterdir()}
    assert await repo.remove_tag("v1", gone.digest)
    assert tags(repo.path) == ["v2"] and [e["digest"] for e in untagged(repo.path)] == [sig.digest]
    assert {p.name for p in (repo.path / "blobs" / "sha256").iterdir()} == before


async def test_prune_keeps_the_referrers_when_the_removed_image_cannot_be_read(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "layout", create=True)
    gone = await put_image(repo, "v1", "gone")
    sig = await put_referrer(repo, gone, "sig")
    (repo.path / "blobs" / "sha256" / gone.digest.split(":")[1]).write_bytes(b"not a manifest")
    assert await repo.remove_tag("v1", gone.digest)
    assert tags(repo.path) == [] and [e["digest"] for e in untagged(repo.path)] == [sig.digest]
    assert blob_exists(repo, sig.digest)


async def test_signatures_travel_registry_to_layout_to_registry(
    native: ReferrersRegistry, registry2: RegistryServer, client: RegistryClient, tmp_path: Path,
) -> None:
    repo = unique_repo("layout-att")
    index, artifacts = attach_all(native, repo, seed=1901)
    source = client.repository(native.host, repo)
    layout = LayoutRepository(tmp_path / "layout", create=True)
    mover = BlobMover()
    result = await copy_image(source, "v1", layout, "v1", mover)
    attached = await copy_attached(source, layout, result.subjects, mover, ArtifactPolicy())
    assert {a.digest for a in attached} == set(artifacts.values()) and all(a.copied for a in attached)
    assert {e["digest"] for e in untagged(layout.path)} == set(artifacts.values())
    child = next(iter((await source.get_manifest(index)).children)).digest
    for subject in (index, child, artifacts["index-att"]):  # on the index, a child, and an attestation
        assert await referrer_digests(layout, subject) == await referrer_digests(source, subject) != set()
    before = (layout.path / "index.json").read_bytes()
    again = await copy_attached(source, layout, result.subjects, mover, ArtifactPolicy())
    assert not any(a.copied for a in again) and (layout.path / "index.json").read_bytes() == before
    # On from the layout to a registry without the referrers API: its fallback tags list the same.
    target = client.repository(registry2.host, repo)
    onward = await copy_image(layout, "v1", target, "v1", mover)
    moved = await copy_attached(layout, target, onward.subjects, mover, ArtifactPolicy())
    assert {a.digest for a in moved} == set(artifacts.values())
    for subject in (index, child, artifacts["index-att"]):
        assert await referrer_digests(target, subject) == await referrer_digests(source, subject)


def test_copy_into_a_layout_indexes_the_signatures_without_a_warning(
    native: ReferrersRegistry, tmp_path: Path,
) -> None:
    repo = unique_repo("layout-cli")
    index, artifacts = attach_all(native, repo, seed=1902)
    out = CliRunner().invoke(main, ["copy", f"{native.host}/{repo}:v1", f"oci:{tmp_path / 'l'}:v1"])
    assert out.exit_code == 0, out.output
    assert "cannot index referrers" not in out.output
    assert {e["digest"] for e in untagged(tmp_path / "l")} == set(artifacts.values())
    assert sha256_digest((tmp_path / "l" / "blobs" / "sha256" / index.split(":")[1]).read_bytes()) == index


def test_sync_into_layouts_keeps_signatures_indexed_and_prunes_them_with_their_image(
    native: ReferrersRegistry, registry: RegistryServer, tmp_path: Path,
) -> None:
    ns = unique_repo("layout-sync")
    index, artifacts = attach_all(native, f"{ns}/app", seed=1903)
    keep, _ = push_image(native.pusher(), f"{ns}/app", "keep", layers=[make_layer(1904, 900)])
    args = (f"{native.host}/{ns}", "--dest", f"oci:{tmp_path / 'mirror'}")
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    layout = tmp_path / "mirror" / "app"
    assert {e["digest"] for e in untagged(layout)} == set(artifacts.values())
    assert report["totals"]["artifacts_copied"] == len(artifacts)
    code, out, report = run_sync(tmp_path, *args)  # nothing new: nothing copied, the index untouched
    assert code == 0 and report["totals"]["artifacts_copied"] == 0, out
    registry.pusher().delete_manifest(f"{ns}/app", index)
    code, out, report = run_sync(tmp_path, *args, "--prune", "--max-removed", "100%")
    assert code == 0, out
    assert tags(layout) == ["keep"] and untagged(layout) == []
    remaining = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert not {d.split(":")[1] for d in (index, *artifacts.values())} & remaining
    assert keep.split(":")[1] in remaining


async def test_an_unchanged_index_is_parsed_once_and_a_changed_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each image of a run asks the layout again (tags, referrers): re-validating index.json every time made a
    # no-op into a layout of N images cost N². Another writer's change must still be seen at once.
    first = LayoutRepository(tmp_path / "layout", create=True)
    image = await put_image(first, "v1", "img")
    sig = await put_referrer(first, image, "sig")
    reads: list[str] = []
    real_read = LayoutRepository._manifest_bytes
    monkeypatch.setattr(LayoutRepository, "_manifest_bytes",
                        lambda self, digest: reads.append(digest) or real_read(self, digest))
    second = LayoutRepository(tmp_path / "layout", create=False)
    validated: list[str] = []
    real = index_module.Descriptor.from_json
    monkeypatch.setattr(index_module.Descriptor, "from_json",
                        staticmethod(lambda obj, where: validated.append(where) or real(obj, where)))
    loads = lambda: len([w for w in validated if w.startswith("oci:")])  # noqa: E731 (index.json's checks)
    for _ in range(3):
        assert await second.list_tags() == ["v1"]
        assert [r["digest"] for r in await second.referrers(image.digest) or []] != []
    assert loads() == 2  # two entries, validated once
    assert sorted(reads) == sorted([image.digest, sig.digest])  # each root's manifest read once, not per lookup
    await first.put_manifest("v2", image)  # another repository object (another process) writes
    assert await second.list_tags() == ["v1", "v2"]
    assert loads() == 2 + 2 + 3  # the writer read the 2 entries before writing, the reader reads the new 3
