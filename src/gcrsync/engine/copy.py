"""Copy one image (any manifest graph) between two ImageStores, byte for byte.

Order is what keeps targets consistent: blobs before the manifest that references them, children before
the index, the tag last. Every blob is verified while it streams; a mismatch fails the image before its
manifest is pushed, so a target never holds a manifest that points at bad or missing data.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gcrsync.engine.blobs import BlobMover, verified
from gcrsync.engine.result import ImageResult
from gcrsync.errors import GcrsyncError, ManifestError, NotFound, RegistryError
from gcrsync.oci import IMAGE_TYPES, Manifest, Platform, filter_index, parse_manifest
from gcrsync.store import ImageStore

log = logging.getLogger("gcrsync.copy")

MAX_INDEX_DEPTH = 4  # index → index → manifest is the deepest seen in the wild; more is abuse or a loop


@dataclass
class CopyOptions:
    platforms: list[Platform] = field(default_factory=list)
    force: bool = False  # push even when the target tag already has the digest
    check_target: bool = True  # HEAD the target tag first (the sync plan already did, so it turns this off)
    # Digests of manifest lists the source declared sparse (quay's `is_sparse`): only their children may
    # be absent at the source. A 404 child of any other index fails the image, as it always did.
    sparse: frozenset[str] = frozenset()


async def copy_image(
    src: ImageStore,
    src_ref: str,
    dst: ImageStore,
    dst_ref: str,
    mover: BlobMover,
    options: CopyOptions | None = None,
    *,
    on_manifest: Callable[[Manifest], None] | None = None,
) -> ImageResult:
    """Copy src:src_ref to dst:dst_ref. Raises GcrsyncError on failure (nothing referencing bad data pushed)."""
    options = options or CopyOptions()
    result = ImageResult(source=_ref_text(src, src_ref), target=_ref_text(dst, dst_ref))
    root = await src.get_manifest(src_ref)
    result.source_digest = root.digest
    sparse = root.is_index and root.digest in options.sparse
    if options.platforms and root.is_index:
        root = filter_index(root, options.platforms)
        result.platforms = [str(p) for p in options.platforms]
    elif options.platforms and root.media_type in IMAGE_TYPES:
        platform = await image_platform(src, root)
        if platform is not None and mover.locations is not None:
            mover.locations.set_platform(root.digest, str(platform))
        if platform is not None and not any(p.matches(platform) for p in options.platforms):
            wanted = ", ".join(str(p) for p in options.platforms)
            raise PlatformMismatch(f"{result.source} is a single-platform {platform} image, not {wanted}")
    result.digest, result.media_type = root.digest, root.media_type
    result.subjects = ([] if result.platforms else [root.digest]) + [c.digest for c in root.children]
    if on_manifest:
        on_manifest(root)
    if options.check_target and not options.force:
        existing = await dst.head_manifest(dst_ref)
        if existing is not None and existing.digest == root.digest:
            result.state = "unchanged"
            return result
    missing: set[str] = set()
    await _copy_graph(src, dst, root, mover, result, depth=0, path=frozenset(), missing=missing if sparse else None)
    if missing and not {c.digest for c in root.children} - missing:
        raise ManifestError(f"{result.source} is a sparse index none of whose (selected) children exist at the source")
    try:
        await dst.put_manifest(dst_ref, root)
    except RegistryError as exc:
        if not missing or exc.status not in (None, 400, 404):
            raise
        # The target refuses an index whose children it does not hold (distribution, OCI layouts): push
        # the list of the children that exist instead (new bytes, new digest, like a platform filter).
        log.info("%s refuses the sparse index (%s): pushing it without the %d children absent at the source",
                 result.target, exc, len(missing))
        reduced = without_children(root, missing)
        await dst.put_manifest(dst_ref, reduced)
        result.digest = reduced.digest
    # What is absent (and an index the target does not hold byte for byte) carries no attached artifacts.
    result.subjects = [d for d in result.subjects if d not in missing and (d != root.digest or d == result.digest)]
    result.sparse_children_missing = len(missing)
    result.manifests_pushed += 1
    return result


def without_children(index: Manifest, absent: set[str]) -> Manifest:
    """An index minus the entries pointing at `absent` digests (everything else kept as it is)."""
    doc = dict(index.extra)
    doc["manifests"] = [raw for raw, desc in zip(doc["manifests"], index.children, strict=True)
                        if desc.digest not in absent]
    return parse_manifest(json.dumps(doc, indent=3).encode(), index.media_type)


class PlatformMismatch(GcrsyncError):
    """A single-platform image whose platform is not among the requested ones (skipped by a sync)."""


MAX_CONFIG_BYTES = 1024 * 1024


async def image_platform(src: ImageStore, manifest: Manifest) -> Platform | None:
    """os/architecture[/variant] from an image's config blob; None for artifacts and unreadable configs."""
    config = manifest.blobs[0] if manifest.blobs else None
    if config is None or config.size > MAX_CONFIG_BYTES or not config.media_type.endswith(
        ("container.image.v1+json", "image.config.v1+json")
    ):
        return None
    data = bytearray()
    async with src.open_blob(config) as chunks:
        async for chunk in verified(chunks, config):
            data += chunk
    try:
        doc = json.loads(bytes(data))
        os_name, arch = doc["os"], doc["architecture"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    variant = doc.get("variant")
    return Platform(os_name, arch, variant if isinstance(variant, str) else None)


async def _copy_graph(
    src: ImageStore,
    dst: ImageStore,
    manifest: Manifest,
    mover: BlobMover,
    result: ImageResult,
    *,
    depth: int,
    path: frozenset[str],
    missing: set[str] | None = None,
) -> None:
    """Copy what `manifest` references. `missing`: the index is declared sparse, so a child absent at the
    source (404) is left out and added to it instead of failing the image."""
    if depth > MAX_INDEX_DEPTH:
        raise ManifestError(f"index nesting deeper than {MAX_INDEX_DEPTH} levels")
    if manifest.digest in path:
        raise ManifestError(f"index refers to itself ({manifest.digest[:19]}…): cycle refused")
    path = path | {manifest.digest}
    async with asyncio.TaskGroup() as group:
        if manifest.is_index:
            seen: set[str] = set()
            for child in manifest.children:
                if child.digest in seen:
                    continue
                seen.add(child.digest)
                group.create_task(_copy_child(src, dst, child.digest, mover, result, depth, path, missing))
        else:
            unique = {b.digest: b for b in manifest.blobs if not b.foreign}
            for desc in unique.values():
                group.create_task(mover.ensure(desc, src, dst, result))


async def _copy_child(
    src: ImageStore,
    dst: ImageStore,
    digest: str,
    mover: BlobMover,
    result: ImageResult,
    depth: int,
    path: frozenset[str],
    missing: set[str] | None = None,
) -> None:
    if digest in path:
        raise ManifestError(f"index refers to itself ({digest[:19]}…): cycle refused")
    # A child manifest already at the target implies its blobs are there too (registries enforce it).
    if await dst.head_manifest(digest) is not None:
        return
    try:
        child = await src.get_manifest(digest)
    except NotFound:
        if missing is None:
            raise
        missing.add(digest)  # a sparse list: this child was never stored at the source
        return
    await _copy_graph(src, dst, child, mover, result, depth=depth + 1, path=path)
    await dst.put_manifest(digest, child)
    result.manifests_pushed += 1


def _ref_text(store: ImageStore, ref: str) -> str:
    sep = "@" if ":" in ref and ref.split(":", 1)[0] in ("sha256", "sha512") else ":"
    return f"{store.name}{sep}{ref}"
