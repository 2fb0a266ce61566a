"""An OCI image layout directory (`oci:PATH[:TAG]`) as an ImageStore, so the engine can copy to and from disk.

Layout per the OCI image spec: `oci-layout`, `index.json` (gcrsync.layout.index: tagged roots, and untagged
roots for referrers) and content-addressed `blobs/<alg>/<hex>`. Manifests are blobs too; children of an
index are plain blobs, not roots.

Crash and concurrency safety: every file becomes visible only by an atomic rename of a fully written, fsynced
temp file (a blob only once its digest verified), and index.json read-modify-write cycles are serialised by an
asyncio.Lock per layout (coroutines of one process) plus flock on the layout directory (other processes).
Prune (remove_tag) drops an index entry (and the untagged referrers of what it pointed at) under the same
locks, then deletes only what the removed entries reached and no remaining entry reaches.
All file I/O runs in worker threads so a slow disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from gcrsync.errors import DigestMismatch, GcrsyncError, InvalidReference, ManifestError, NotFound
from gcrsync.layout.index import IndexFile, classify, entry_tag, index_lock
from gcrsync.layout.referrers import Subjects, by_subject, dependents, referrers_of, untagged_entry
from gcrsync.layout_io import (
    CHUNK_SIZE,
    TMP_PREFIX,
    atomic_write,
    finish_file,
    fsync_dir,
    hash_file,
    iter_file,
    open_read,
    size_or_none,
    write_and_hash,
)
from gcrsync.oci import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    fallback_tag,
    new_hasher,
    parse_manifest,
    reachable,
    referrer_entry,
    validate_digest,
)
from gcrsync.store import ImageStore


def _roots(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["digest"], e.get("mediaType")) for e in entries]


class LayoutRepository:
    """One OCI image layout directory; implements gcrsync.store.ImageStore.

    With create=False the directory must already be a layout for writes (reads of a missing layout report
    "not found"); with create=True the layout is created on the first write, never by merely reading.
    """

    def __init__(self, path: Path, *, create: bool) -> None:
        self._path = Path(path)
        self._root = self._path.resolve()
        self._create = create
        self._ensured = False
        self._index = IndexFile(self._root, self.name)
        self._subjects = Subjects(self._manifest_bytes)
        self._by_subject: tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None = None

    @property
    def name(self) -> str:
        return f"oci:{self._path}"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def domain(self) -> str:
        """Layouts on one filesystem can hard-link blobs from each other (mount_blob)."""
        probe = self._root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            return f"oci-fs:{probe.stat().st_dev}"
        except OSError:
            return self.name

    def __repr__(self) -> str:
        return f"LayoutRepository({str(self._path)!r}, create={self._create})"

    # ---- layout files (synchronous: always called in a worker thread) ----

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hex_part = validate_digest(digest).partition(":")
        return self._root / "blobs" / algorithm / hex_part

    def _tagged(self, tag: str) -> Descriptor | None:
        found = self._index.tagged(tag)
        return Descriptor.from_json(found[1], f"index.json manifests[{found[0]}]") if found else None

    def _indexed_media_type(self, digest: str) -> str | None:
        return self._index.media_type(digest)

    def _ensure_layout(self) -> None:
        if self._ensured:
            return
        if self._index.load() is None:
            if not self._create:
                raise GcrsyncError(f"{self.name}: not an OCI image layout (no oci-layout file)")
            self._index.create()
        self._ensured = True

    def _read_manifest(self, ref: str) -> Manifest:
        is_digest, value = classify(ref)
        if is_digest:
            digest, media_type, size = value, self._indexed_media_type(value), None
        else:
            desc = self._tagged(value)
            if desc is None:
                raise NotFound(f"{self.name}: no tag {value!r}")
            digest, media_type, size = desc.digest, desc.media_type or None, desc.size
        path = self._blob_path(digest)
        actual_size = size_or_none(path)
        if actual_size is None:
            raise NotFound(f"{self.name}: manifest {digest} not found")
        if actual_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{self.name}: {ref} is {actual_size} bytes, too large for a manifest")
        raw = path.read_bytes()
        if size is not None and size != len(raw):
            raise ManifestError(f"{self.name}: {ref} is {len(raw)} bytes but index.json says {size}")
        try:
            return parse_manifest(raw, media_type, expected_digest=digest)
        except ManifestError as exc:
            raise ManifestError(f"{self.name}: {ref}: {exc}") from None

    def _head_manifest(self, ref: str) -> Descriptor | None:
        is_digest, value = classify(ref)
        if not is_digest:
            desc = self._tagged(value)
            # A tag whose blob is gone is reported absent so a copy repairs it instead of skipping it.
            if desc is None or size_or_none(self._blob_path(desc.digest)) != desc.size:
                return None
            if desc.media_type:
                return Descriptor(desc.media_type, desc.digest, desc.size)
        try:
            manifest = self._read_manifest(ref)
        except (NotFound, ManifestError):
            return None  # absent, or a blob that is not a manifest (e.g. a layer)
        return Descriptor(manifest.media_type, manifest.digest, len(manifest.raw))

    def _write_manifest_blob(self, manifest: Manifest) -> None:
        self._ensure_layout()
        # Like a registry, refuse a manifest whose content is missing: the layout would be unusable.
        for desc in (*manifest.children, *manifest.blobs):
            if not desc.foreign and size_or_none(self._blob_path(desc.digest)) is None:
                raise NotFound(f"{self.name}: {manifest.digest} references missing {desc.digest}")
        path = self._blob_path(manifest.digest)
        if size_or_none(path) == len(manifest.raw):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, manifest.raw)

    def _set_tag(self, tag: str, manifest: Manifest) -> None:
        self._index.set_tag(tag, {"mediaType": manifest.media_type, "digest": manifest.digest,
                                  "size": len(manifest.raw)})

    def _remove_tag(self, tag: str, digest: str) -> bool:
        if not self._root.is_dir():
            return False  # no layout at all, so no tag either
        with self._index.flocked():
            doc = self._index.load()
            entries = doc["manifests"] if doc else []
            tagged = [e for e in entries if entry_tag(e) == tag]
            if doc is None or not tagged or any(e.get("digest") != digest for e in tagged):
                return False  # not there, or moved on to other content since the plan: leave it alone
            remaining = [e for e in entries if entry_tag(e) != tag]
            doc["manifests"] = survivors = self._without_orphans(remaining, digest, tagged[0].get("mediaType"))
            self._index.write(doc)
            # Only content the removed entries reached is considered: blobs of a copy still in progress (not
            # referenced by index.json yet) or put there by other tools are never touched.
            kept = reachable(_roots(survivors), self._manifest_bytes)
            if kept is None:  # some remaining manifest could not be read: keep everything rather than guess
                return True
            staying = {id(e) for e in survivors}
            dropped = [e for e in remaining if id(e) not in staying]
            gone = [(digest, tagged[0].get("mediaType")), *_roots(dropped)]
            for unused in (reachable(gone, self._manifest_bytes) or set()) - kept:
                with suppress(FileNotFoundError):
                    self._blob_path(unused).unlink()
        return True

    def _without_orphans(self, remaining: list[dict[str, Any]], digest: str, media_type: str | None,
                         ) -> list[dict[str, Any]]:
        """`remaining` without the untagged referrers of what the removed entry reached (the image, an
        index's children, and their referrers in turn) that nothing remaining still reaches."""
        reached = reachable([(digest, media_type)], self._manifest_bytes)
        if not reached:
            return remaining
        candidates = dependents(remaining, reached, self._subjects)
        others = [e for e in remaining if entry_tag(e) is not None or e["digest"] not in candidates]
        alive = reachable(_roots(others), self._manifest_bytes)
        if alive is None:  # a remaining manifest is unreadable: what it reaches is unknown, keep them all
            return remaining
        orphans = dependents(remaining, reached - alive, self._subjects)
        return [e for e in remaining if entry_tag(e) is not None or e["digest"] not in orphans]

    def _manifest_bytes(self, digest: str) -> bytes | None:
        """A blob read as a possible manifest: None when absent, b"" (unparseable) when too large for one."""
        path = self._blob_path(digest)
        size = size_or_none(path)
        if size is None:
            return None
        return path.read_bytes() if size <= MAX_MANIFEST_BYTES else b""

    def _link_from(self, desc: Descriptor, source: LayoutRepository) -> bool:
        target = self._blob_path(desc.digest)
        if size_or_none(target) is not None and (desc.size < 0 or size_or_none(target) == desc.size):
            return True
        origin = source._blob_path(desc.digest)
        size = size_or_none(origin)
        if size is None or (desc.size >= 0 and size != desc.size):
            return False
        # Hashing is a read only (cheaper than the copy it saves) and keeps "visible means verified" true.
        if hash_file(origin, desc.digest) != desc.digest:
            return False
        self._ensure_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TMP_PREFIX}link-{uuid.uuid4().hex}"
        try:
            os.link(origin, tmp)
            os.replace(tmp, target)
        except OSError:  # e.g. another filesystem (EXDEV) or no hard links: the engine streams instead
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            return False
        return True

    def _tags(self) -> list[str]:
        tags = [t for t in (entry_tag(e) for e in self._index.entries()) if t is not None]
        return list(dict.fromkeys(tags))

    def _referrers(self, digest: str) -> list[dict[str, Any]]:
        doc = self._index.load()
        entries: list[dict[str, Any]] = doc["manifests"] if doc else []
        if self._by_subject is None or self._by_subject[0] is not entries:  # index.json changed: map it again
            self._by_subject = (entries, by_subject(entries, self._subjects))
        found = referrers_of(self._by_subject[1].get(digest, []), digest, self._subjects)
        listed = {r["digest"] for r in found}
        return found + [r for r in self._fallback(digest)[0] if r["digest"] not in listed]

    def _fallback(self, digest: str) -> tuple[list[dict[str, Any]], str | None]:
        """The referrers index other tools keep under the fallback tag, if there is one."""
        try:
            index = self._read_manifest(fallback_tag(digest))
        except NotFound:
            return [], None
        entries = index.extra.get("manifests") if index.is_index else None
        if not isinstance(entries, list):
            raise ManifestError(f"{self.name}: referrers tag {fallback_tag(digest)} is not an image index")
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)], index.digest

    # ---- ImageStore ----

    async def get_manifest(self, ref: str) -> Manifest:
        return await asyncio.to_thread(self._read_manifest, ref)

    async def head_manifest(self, ref: str) -> Descriptor | None:
        return await asyncio.to_thread(self._head_manifest, ref)

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        is_digest, value = classify(ref)
        try:  # parse_manifest knows what a digest covers (a signed schema1 one excludes its signatures)
            parse_manifest(manifest.raw, manifest.media_type, expected_digest=manifest.digest)
        except ManifestError as exc:
            raise DigestMismatch(f"{self.name}: refusing to store {manifest.digest}: {exc}") from None
        if is_digest and value != manifest.digest:
            raise DigestMismatch(f"{self.name}: cannot store manifest {manifest.digest} under digest {value}")
        await asyncio.to_thread(self._write_manifest_blob, manifest)
        if not is_digest:
            async with index_lock(self._root):
                await asyncio.to_thread(self._set_tag, value, manifest)
        elif manifest.subject is not None:  # a referrer: an untagged root, so it can be found (HasReferrers)
            async with index_lock(self._root):
                await asyncio.to_thread(self._index.add_untagged, untagged_entry(referrer_entry(manifest)))

    async def blob_size(self, digest: str) -> int | None:
        return await asyncio.to_thread(size_or_none, self._blob_path(digest))

    @asynccontextmanager
    async def open_blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._blob_path(desc.digest)
        try:
            f = await asyncio.to_thread(open_read, path)
        except FileNotFoundError:
            raise NotFound(f"{self.name}: blob {desc.digest} not found") from None
        chunks = iter_file(f)
        try:
            yield chunks
        finally:
            await chunks.aclose()
            f.close()

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        """Stream into a temp file beside the target while hashing; rename only once digest and size match.

        A blob already present with the right size is kept as is and `chunks` is left unconsumed.
        """
        path = self._blob_path(desc.digest)
        hasher = new_hasher(desc.digest)
        existing = await asyncio.to_thread(size_or_none, path)
        if existing is not None and (desc.size < 0 or existing == desc.size):
            return
        await asyncio.to_thread(self._ensure_layout)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp = await asyncio.to_thread(tempfile.mkstemp, dir=path.parent, prefix=TMP_PREFIX)
        f = os.fdopen(fd, "wb")
        committed = False
        try:
            total = 0
            pending = bytearray()  # coalesce small network chunks into ~1 MiB writes
            async for chunk in chunks:
                total += len(chunk)
                if 0 <= desc.size < total:
                    raise DigestMismatch(f"{self.name}: blob {desc.digest} is longer than {desc.size} bytes")
                pending += chunk
                if len(pending) >= CHUNK_SIZE:
                    await asyncio.to_thread(write_and_hash, f, hasher, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(write_and_hash, f, hasher, bytes(pending))
            await asyncio.to_thread(finish_file, f)
            actual = f"{hasher.name}:{hasher.hexdigest()}"
            if desc.size >= 0 and total != desc.size:
                raise DigestMismatch(f"{self.name}: blob {desc.digest} is {total} bytes, not {desc.size}")
            if actual != desc.digest:
                raise DigestMismatch(f"{self.name}: blob bytes hash to {actual}, not {desc.digest}")
            await asyncio.to_thread(os.replace, tmp, path)
            committed = True
            await asyncio.to_thread(fsync_dir, path.parent)
        finally:
            # Synchronous on purpose: it must also run when the task is being cancelled.
            f.close()
            if not committed:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)

    async def mount_blob(self, desc: Descriptor, source: ImageStore) -> bool:
        """Hard-link the blob from another layout on the same filesystem; False when that is not possible."""
        if not isinstance(source, LayoutRepository) or desc.foreign:
            return False
        return await asyncio.to_thread(self._link_from, desc, source)

    async def list_tags(self) -> list[str]:
        return await asyncio.to_thread(self._tags)

    # ---- HasReferrers: a layout indexes the referrers put into it itself, as a registry with the API does ----

    async def referrers(self, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]] | None:
        """The manifests of index.json whose subject is `digest`, and those of its fallback tag if any."""
        found = await asyncio.to_thread(self._referrers, validate_digest(digest))
        return [r for r in found if artifact_type is None or r.get("artifactType") == artifact_type]

    async def fallback_referrers(self, digest: str) -> tuple[list[dict[str, Any]], str | None]:
        return await asyncio.to_thread(self._fallback, validate_digest(digest))

    async def add_fallback_referrers(self, digest: str, entries: list[dict[str, Any]]) -> bool:
        """Index `entries` as referrers of `digest` the layout's own way (untagged roots): a fallback tag
        would only duplicate them. Entries whose manifest is not in the layout are skipped."""
        validate_digest(digest)
        changed = False
        async with index_lock(self._root):
            for listed in entries:
                if await asyncio.to_thread(self._head_manifest, validate_digest(listed.get("digest"))):
                    changed |= await asyncio.to_thread(self._index.add_untagged, untagged_entry(listed))
        return changed

    async def has_referrers_api(self) -> bool:
        return True

    async def remove_tag(self, tag: str, digest: str) -> bool:
        """RemovesTags: drop the tag's index.json entry, then the manifests and blobs only it kept alive.

        False, and nothing deleted, when the tag is absent or points at another digest. Another tag on the
        same digest keeps all of it. Do not prune a layout another process is writing into at the same time:
        a blob it found present and is about to reference could go (as with a registry's garbage collection).
        """
        is_digest, value = classify(tag)
        if is_digest:
            raise InvalidReference(f"{self.name}: remove_tag takes a tag, not the digest {value[:80]!r}")
        validate_digest(digest)
        async with index_lock(self._root):
            return await asyncio.to_thread(self._remove_tag, value, digest)
