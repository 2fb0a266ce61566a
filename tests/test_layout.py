"""LayoutRepository: OCI layouts written through our API, checked against skopeo as an independent oracle."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gcrsync.errors import DigestMismatch, GcrsyncError, InvalidReference, ManifestError, NotFound
from gcrsync.layout import REF_NAME, LayoutRepository
from gcrsync.layout_io import CHUNK_SIZE
from gcrsync.oci import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest, parse_manifest, sha256_digest
from gcrsync.store import ImageStore, RemovesTags

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def make_layer(content: bytes, name: str) -> tuple[bytes, str]:
    """A real gzipped tar (so skopeo can treat it as a layer) and its uncompressed diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = buf.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256_digest(tar_bytes)


async def put_bytes(repo: LayoutRepository, media_type: str, data: bytes) -> Descriptor:
    desc = Descriptor(media_type, sha256_digest(data), len(data))
    await repo.put_blob(desc, chunks_of(data))
    return desc


async def put_image(repo: LayoutRepository, ref: str | None, seed: str, arch: str = "amd64") -> Manifest:
    """config + 2 layers + manifest, stored under ref (a tag) or only by digest when ref is None."""
    layers = [make_layer(f"{seed} layer {i}\n".encode(), f"file{i}.txt") for i in range(2)]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [f"SEED={seed}"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
    }
    config_desc = await put_bytes(repo, CONFIG_TYPE, json.dumps(config).encode())
    layer_descs = [await put_bytes(repo, LAYER_TYPE, blob) for blob, _ in layers]

    def as_json(d: Descriptor) -> dict[str, object]:
        return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}

    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": as_json(config_desc),
        "layers": [as_json(d) for d in layer_descs],
    }
    manifest = parse_manifest(json.dumps(doc, indent=2).encode())
    await repo.put_manifest(ref or manifest.digest, manifest)
    return manifest


async def put_index(repo: LayoutRepository, tag: str) -> Manifest:
    children = []
    for arch in ("amd64", "arm64"):
        child = await put_image(repo, None, f"index-{arch}", arch)
        children.append(
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": len(child.raw),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode())
    await repo.put_manifest(tag, index)
    return index


def index_json(path: Path) -> Any:
    return json.loads((path / "index.json").read_text())


def skopeo(*args: str) -> bytes:
    result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def temp_files(path: Path) -> list[Path]:
    return [p for p in path.rglob(".tmp-*")]


@pytest.fixture
def repo(tmp_path: Path) -> LayoutRepository:
    return LayoutRepository(tmp_path / "layout", create=True)


def test_satisfies_image_store_protocol(tmp_path: Path) -> None:
    store: ImageStore = LayoutRepository(tmp_path / "x", create=False)  # checked by mypy
    assert store.name == f"oci:{tmp_path / 'x'}"


@needs_skopeo
async def test_image_is_valid_for_skopeo(repo: LayoutRepository, tmp_path: Path) -> None:
    manifest = await put_image(repo, "v1", "one")
    assert json.loads((repo.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    raw = skopeo("inspect", "--raw", f"oci:{repo.path}:v1")
    assert raw == manifest.raw
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == manifest.digest
    info = json.loads(skopeo("inspect", f"oci:{repo.path}:v1"))
    assert info["Architecture"] == "amd64" and "SEED=one" in info["Env"]

    other = tmp_path / "other"
    skopeo("copy", "--preserve-digests", f"oci:{repo.path}:v1", f"oci:{other}:v1")
    # And we read the layout skopeo wrote: same manifest, same blobs.
    copied = LayoutRepository(other, create=False)
    assert (await copied.get_manifest("v1")).digest == manifest.digest
    assert await copied.list_tags() == ["v1"]
    for blob in manifest.blobs:
        assert await copied.blob_size(blob.digest) == blob.size
    # Adding a tag to skopeo's layout keeps its entry and stays readable by skopeo.
    writer = LayoutRepository(other, create=False)
    added = await put_image(writer, "v2", "two")
    assert sorted(await writer.list_tags()) == ["v1", "v2"]
    assert sha256_digest(skopeo("inspect", "--raw", f"oci:{other}:v1")) == manifest.digest
    assert sha256_digest(skopeo("inspect", "--raw", f"oci:{other}:v2")) == added.digest


@needs_skopeo
async def test_index_is_valid_for_skopeo(repo: LayoutRepository, tmp_path: Path) -> None:
    index = await put_index(repo, "multi")
    entries = index_json(repo.path)["manifests"]
    # Only the tagged root is listed; its descriptor carries no platform (it is an index).
    assert entries == [
        {
            "mediaType": OCI_INDEX,
            "digest": index.digest,
            "size": len(index.raw),
            "annotations": {REF_NAME: "multi"},
        }
    ]
    raw = skopeo("inspect", "--raw", f"oci:{repo.path}:multi")
    assert sha256_digest(raw) == index.digest

    other = tmp_path / "other"
    skopeo("copy", "--all", "--preserve-digests", f"oci:{repo.path}:multi", f"oci:{other}:multi")
    copied = LayoutRepository(other, create=False)
    got = await copied.get_manifest("multi")
    assert got.digest == index.digest and got.is_index
    for child in got.children:
        assert (await copied.get_manifest(child.digest)).digest == child.digest


@needs_skopeo
async def test_tag_is_replaced_on_reput(repo: LayoutRepository) -> None:
    first = await put_image(repo, "v1", "first")
    await put_image(repo, "other", "unrelated")
    second = await put_image(repo, "v1", "second")
    assert first.digest != second.digest
    tagged = [e for e in index_json(repo.path)["manifests"] if e["annotations"][REF_NAME] == "v1"]
    assert [e["digest"] for e in tagged] == [second.digest]
    assert sorted(await repo.list_tags()) == ["other", "v1"]
    assert (await repo.get_manifest("v1")).digest == second.digest
    assert sha256_digest(skopeo("inspect", "--raw", f"oci:{repo.path}:v1")) == second.digest


async def test_concurrent_puts_lose_no_tag(repo: LayoutRepository) -> None:
    tags = [f"t{i}" for i in range(20)]
    # Half the images share their seed, so the same blobs are also being written concurrently.
    manifests = await asyncio.gather(*(put_image(repo, tag, f"seed{i % 10}") for i, tag in enumerate(tags)))
    assert sorted(await repo.list_tags()) == sorted(tags)
    entries = index_json(repo.path)["manifests"]
    assert len(entries) == 20
    for tag, manifest in zip(tags, manifests, strict=True):
        head = await repo.head_manifest(tag)
        assert head == Descriptor(OCI_MANIFEST, manifest.digest, len(manifest.raw))
    assert temp_files(repo.path) == []


async def test_concurrent_puts_from_two_repository_objects(tmp_path: Path) -> None:
    a = LayoutRepository(tmp_path / "l", create=True)
    b = LayoutRepository(tmp_path / "x" / ".." / "l", create=True)  # same directory, other spelling
    await asyncio.gather(*(put_image(a if i % 2 else b, f"t{i}", f"s{i}") for i in range(10)))
    assert sorted(await a.list_tags()) == sorted(f"t{i}" for i in range(10))


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"the-original", "hash to"), (b"the original+", "longer than"), (b"the orig", "8 bytes, not 12")],
)
async def test_digest_or_size_mismatch_leaves_no_file(repo: LayoutRepository, data: bytes, why: str) -> None:
    await put_bytes(repo, CONFIG_TYPE, b"{}")  # the layout exists beforehand
    desc = Descriptor(LAYER_TYPE, sha256_digest(b"the original"), 12)
    with pytest.raises(DigestMismatch, match=why):
        await repo.put_blob(desc, chunks_of(data, 3))
    assert await repo.blob_size(desc.digest) is None
    assert temp_files(repo.path) == []


async def test_failing_stream_leaves_no_temp_file(repo: LayoutRepository) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"what"
        raise ConnectionResetError("peer went away")

    desc = Descriptor(LAYER_TYPE, sha256_digest(b"whatever"), 8)
    with pytest.raises(ConnectionResetError):
        await repo.put_blob(desc, broken())
    assert await repo.blob_size(desc.digest) is None
    assert temp_files(repo.path) == []


async def test_cancelled_put_leaves_no_temp_file(repo: LayoutRepository) -> None:
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"partial"
        started.set()
        await asyncio.Future()  # never resolves: the peer stalls until we are cancelled
        yield b"never"

    desc = Descriptor(LAYER_TYPE, sha256_digest(b"partial data"), 12)
    task = asyncio.create_task(repo.put_blob(desc, stalled()))
    await started.wait()
    assert len(temp_files(repo.path)) == 1  # the write really was in progress
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert temp_files(repo.path) == []
    assert await repo.blob_size(desc.digest) is None


async def test_streams_identical_bytes_in_mib_chunks(repo: LayoutRepository) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 12345)
    desc = await put_bytes(repo, LAYER_TYPE, data)
    assert await repo.blob_size(desc.digest) == len(data)
    async with repo.open_blob(desc) as stream:
        chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert len(chunks) == 4 and all(len(c) <= CHUNK_SIZE for c in chunks)


async def test_present_blob_is_not_rewritten(repo: LayoutRepository) -> None:
    desc = await put_bytes(repo, LAYER_TYPE, b"payload")
    path = repo.path / "blobs" / "sha256" / desc.digest.split(":")[1]
    inode = path.stat().st_ino
    consumed = []

    async def tracked() -> AsyncIterator[bytes]:
        consumed.append(True)
        yield b"payload"

    await repo.put_blob(desc, tracked())
    assert path.stat().st_ino == inode and consumed == []


async def test_open_missing_blob_is_not_found(repo: LayoutRepository) -> None:
    with pytest.raises(NotFound):
        async with repo.open_blob(Descriptor(LAYER_TYPE, sha256_digest(b"nope"), 4)):
            pass


async def test_digest_ref_stores_blob_only(repo: LayoutRepository) -> None:
    manifest = await put_image(repo, None, "untagged")
    assert index_json(repo.path)["manifests"] == []
    assert await repo.list_tags() == []
    assert (await repo.get_manifest(manifest.digest)).raw == manifest.raw
    assert await repo.head_manifest(manifest.digest) == Descriptor(OCI_MANIFEST, manifest.digest, len(manifest.raw))
    # A layer is a blob but not a manifest.
    assert await repo.head_manifest(manifest.blobs[1].digest) is None


async def test_manifest_with_missing_blobs_is_refused(repo: LayoutRepository) -> None:
    layer = {"mediaType": LAYER_TYPE, "digest": sha256_digest(b"absent"), "size": 6}
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": layer, "layers": [layer]}).encode()
    with pytest.raises(NotFound, match="references missing"):
        await repo.put_manifest("v1", parse_manifest(raw))
    assert await repo.list_tags() == []


async def test_manifest_under_wrong_digest_is_refused(repo: LayoutRepository) -> None:
    manifest = await put_image(repo, None, "m")
    with pytest.raises(DigestMismatch):
        await repo.put_manifest(sha256_digest(b"other"), manifest)


async def test_manifest_whose_bytes_do_not_match_its_digest_is_refused(repo: LayoutRepository) -> None:
    manifest = await put_image(repo, None, "m")
    forged = dataclasses.replace(manifest, raw=manifest.raw + b" ")
    with pytest.raises(DigestMismatch, match="hash to"):
        await repo.put_manifest("v1", forged)
    assert await repo.list_tags() == []


async def test_corrupt_manifest_blob_is_detected(repo: LayoutRepository) -> None:
    manifest = await put_image(repo, "v1", "c")
    blob = repo.path / "blobs" / "sha256" / manifest.digest.split(":")[1]
    blob.write_bytes(manifest.raw.replace(b"2", b"3", 1))
    with pytest.raises(ManifestError, match="hash to"):
        await repo.get_manifest(manifest.digest)
    # The tag's blob no longer matches its recorded size/digest: reported absent so a copy repairs it.
    blob.write_bytes(b"{}")
    assert await repo.head_manifest("v1") is None


async def test_missing_layout_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "nothing", create=True)
    assert await repo.list_tags() == []
    assert await repo.head_manifest("v1") is None
    assert await repo.blob_size(sha256_digest(b"")) is None
    with pytest.raises(NotFound):
        await repo.get_manifest("v1")
    assert not (tmp_path / "nothing").exists()


async def test_write_without_create_is_refused(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "nothing", create=False)
    with pytest.raises(GcrsyncError, match="not an OCI image layout"):
        await put_bytes(repo, LAYER_TYPE, b"data")
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize(
    ("index_text", "message"),
    [
        ("{not json", "index.json is not valid JSON"),
        ("[]", "schemaVersion 2"),
        ('{"schemaVersion": 2}', "no 'manifests' list"),
        ('{"schemaVersion": 2, "manifests": [{"digest": "sha256:xyz", "size": 1}]}', "invalid .*digest"),
    ],
)
async def test_malformed_index_is_a_clear_error(repo: LayoutRepository, index_text: str, message: str) -> None:
    await put_image(repo, "v1", "m")
    (repo.path / "index.json").write_text(index_text)
    for call in (repo.list_tags(), repo.get_manifest("v1")):
        with pytest.raises(ManifestError, match=message):
            await call


@pytest.mark.parametrize("layout_text", ["garbage", '{"imageLayoutVersion": "2.0.0"}', "[1]"])
async def test_malformed_oci_layout_is_a_clear_error(repo: LayoutRepository, layout_text: str) -> None:
    await put_image(repo, "v1", "m")
    (repo.path / "oci-layout").write_text(layout_text)
    with pytest.raises(GcrsyncError, match="oci-layout is malformed"):
        await repo.list_tags()


async def test_index_without_oci_layout_is_rejected(repo: LayoutRepository) -> None:
    await put_image(repo, "v1", "m")
    (repo.path / "oci-layout").unlink()
    with pytest.raises(GcrsyncError, match="no oci-layout"):
        await repo.get_manifest("v1")


async def test_bad_references_are_rejected(repo: LayoutRepository) -> None:
    for ref in ("sha256:short", "-bad", "a" * 129, "has space"):
        with pytest.raises(InvalidReference):
            await repo.get_manifest(ref)


async def test_mount_links_blob_between_layouts(repo: LayoutRepository, tmp_path: Path) -> None:
    desc = await put_bytes(repo, LAYER_TYPE, b"shared layer")
    target = LayoutRepository(tmp_path / "target", create=True)
    assert await target.mount_blob(desc, repo) is True
    src = repo.path / "blobs" / "sha256" / desc.digest.split(":")[1]
    dst = target.path / "blobs" / "sha256" / desc.digest.split(":")[1]
    assert dst.read_bytes() == b"shared layer" and dst.stat().st_ino == src.stat().st_ino
    missing = Descriptor(LAYER_TYPE, sha256_digest(b"absent"), 6)
    assert await target.mount_blob(missing, repo) is False
    assert temp_files(target.path) == []


async def test_mount_refuses_corrupt_source_blob(repo: LayoutRepository, tmp_path: Path) -> None:
    desc = await put_bytes(repo, LAYER_TYPE, b"original")
    (repo.path / "blobs" / "sha256" / desc.digest.split(":")[1]).write_bytes(b"tampered")
    target = LayoutRepository(tmp_path / "target", create=True)
    assert await target.mount_blob(desc, repo) is False
    assert await target.blob_size(desc.digest) is None


# -- remove_tag (prune on a layout) --------------------------------------------------------------------------


def blob_files(path: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (path / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}


def tags_in_index(path: Path) -> list[str]:
    return sorted(e["annotations"][REF_NAME] for e in index_json(path)["manifests"])


def test_satisfies_removes_tags(repo: LayoutRepository) -> None:
    assert isinstance(repo, RemovesTags)


@needs_skopeo
async def test_remove_tag_drops_only_what_nothing_else_reaches(repo: LayoutRepository, tmp_path: Path) -> None:
    a = await put_image(repo, "a", "shared", "amd64")
    b = await put_image(repo, "b", "shared", "arm64")  # the same two layers as a, its own config
    index = await put_index(repo, "multi")
    before = blob_files(repo.path)
    assert await repo.remove_tag("a", a.digest) is True
    assert tags_in_index(repo.path) == ["b", "multi"]
    assert before - blob_files(repo.path) == {a.digest, a.blobs[0].digest}  # manifest and config; layers shared
    assert await repo.head_manifest("a") is None
    # Removing an index takes its child manifests and their blobs along; b is untouched.
    assert await repo.remove_tag("multi", index.digest) is True
    assert blob_files(repo.path) == {b.digest, *(d.digest for d in b.blobs)}
    assert tags_in_index(repo.path) == ["b"]
    # What is left is a complete image for an independent reader: skopeo copies it, verifying every blob.
    other = tmp_path / "other"
    skopeo("copy", "--preserve-digests", f"oci:{repo.path}:b", f"oci:{other}:b")
    assert sha256_digest(skopeo("inspect", "--raw", f"oci:{other}:b")) == b.digest
    assert temp_files(repo.path) == []


async def test_remove_tag_leaves_an_absent_moved_or_shared_tag_alone(repo: LayoutRepository) -> None:
    a = await put_image(repo, "a", "one")
    before, index_before = blob_files(repo.path), (repo.path / "index.json").read_bytes()
    assert await repo.remove_tag("missing", a.digest) is False
    assert await repo.remove_tag("a", "sha256:" + "0" * 64) is False  # the tag points elsewhere now
    assert blob_files(repo.path) == before and (repo.path / "index.json").read_bytes() == index_before
    # The same digest under a second tag: removing one tag keeps every blob for the other.
    await repo.put_manifest("again", a)
    assert await repo.remove_tag("a", a.digest) is True
    assert tags_in_index(repo.path) == ["again"] and blob_files(repo.path) == before
    assert (await repo.get_manifest("again")).digest == a.digest
    with pytest.raises(InvalidReference):
        await repo.remove_tag(a.digest, a.digest)
    assert await LayoutRepository(repo.path.parent / "none", create=False).remove_tag("a", a.digest) is False


async def test_remove_tag_keeps_blobs_when_a_remaining_manifest_is_unreadable(repo: LayoutRepository) -> None:
    a = await put_image(repo, "a", "one")
    b = await put_image(repo, "b", "two")
    (repo.path / "blobs" / "sha256" / b.digest.split(":")[1]).write_bytes(b"not a manifest")
    before = blob_files(repo.path)
    assert await repo.remove_tag("a", a.digest) is True
    assert tags_in_index(repo.path) == ["b"]
    assert blob_files(repo.path) == before  # what b references is unknown: nothing is deleted
