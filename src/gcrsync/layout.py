"""An OCI image layout directory (`oci:PATH[:TAG]`) as an ImageStore, so the engine can copy to and from disk.

Layout per the OCI image spec: `oci-layout` ({"imageLayoutVersion": "1.0.0"}), `index.json` (tags are the
`org.opencontainers.image.ref.name` annotations of its entries) and content-addressed `blobs/<alg>/<hex>`.
Manifests are blobs too; only tagged roots are listed in index.json, children of an index are plain blobs.

Crash and concurrency safety: every file becomes visible only by an atomic rename of a fully written, fsynced
temp file (a blob only once its digest verified), and index.json read-modify-write cycles are serialised by an
asyncio.Lock per layout (coroutines of one process) plus flock on the layout directory (other processes).
Prune (remove_tag) drops an index entry under the same locks, then deletes only what the removed tag reached
and no remaining entry reaches.
All file I/O runs in worker threads so a slow disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import tempfile
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

from gcrsync.errors import DigestMismatch, GcrsyncError, InvalidReference, ManifestError, NotFound
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
    OCI_INDEX,
    Descriptor,
    Manifest,
    new_hasher,
    parse_manifest,
    reachable,
    validate_digest,
)
from gcrsync.store import ImageStore

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'
_LAYOUT_VERSION_RE = re.compile(r"^1\.\d+\.\d+$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# asyncio.Lock binds to the loop that first waits on it, so locks are kept per running loop (tests and
# tools may run several loops one after another); within a loop there is one lock per resolved layout path.
_INDEX_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
# Creating a layout writes two files; two threads creating the same layout must not see each other's half.
_CREATE_LOCK = threading.Lock()


def _index_lock(root: Path) -> asyncio.Lock:
    per_loop = _INDEX_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(root, asyncio.Lock())


def _classify(ref: str) -> tuple[bool, str]:
    """(is_digest, ref): a ref with a colon must be a digest, anything else a tag."""
    if ":" in ref:
        try:
            return True, validate_digest(ref)
        except ManifestError:
            raise InvalidReference(f"invalid digest reference {ref[:80]!r}") from None
    if not _TAG_RE.match(ref):
        raise InvalidReference(f"invalid tag {ref[:80]!r}")
    return False, ref


def _entry_tag(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    tag = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return tag if isinstance(tag, str) else None


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

    def _load_index(self) -> dict[str, Any] | None:
        """The validated index.json document, or None when there is no layout at all."""
        try:
            layout_raw = (self._root / "oci-layout").read_bytes()
        except FileNotFoundError:
            if (self._root / "index.json").exists():
                raise GcrsyncError(f"{self.name}: has index.json but no oci-layout file") from None
            return None
        except OSError as exc:
            raise GcrsyncError(f"{self.name}: cannot read oci-layout: {exc.strerror}") from None
        try:
            version = json.loads(layout_raw).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str) or not _LAYOUT_VERSION_RE.match(version):
            raise GcrsyncError(f"{self.name}: oci-layout is malformed or not imageLayoutVersion 1.x")
        try:
            raw = (self._root / "index.json").read_bytes()
        except OSError as exc:
            raise ManifestError(f"{self.name}: cannot read index.json: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ManifestError(f"{self.name}: index.json is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            raise ManifestError(f"{self.name}: index.json is not an OCI index with schemaVersion 2")
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError(f"{self.name}: index.json has no 'manifests' list")
        for i, entry in enumerate(entries):
            Descriptor.from_json(entry, f"{self.name} index.json manifests[{i}]")
        return doc

    def _tagged(self, tag: str) -> Descriptor | None:
        doc = self._load_index()
        for i, entry in enumerate(doc["manifests"] if doc else []):
            if _entry_tag(entry) == tag:
                return Descriptor.from_json(entry, f"index.json manifests[{i}]")
        return None

    def _indexed_media_type(self, digest: str) -> str | None:
        doc = self._load_index()
        for entry in doc["manifests"] if doc else []:
            if entry.get("digest") == digest and entry.get("mediaType"):
                return str(entry["mediaType"])
        return None

    def _ensure_layout(self) -> None:
        if self._ensured:
            return
        with _CREATE_LOCK:
            if self._load_index() is None:
                if not self._create:
                    raise GcrsyncError(f"{self.name}: not an OCI image layout (no oci-layout file)")
                try:
                    (self._root / "blobs").mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise GcrsyncError(f"{self.name}: cannot create layout: {exc.strerror}") from None
                empty = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
                # index.json first: oci-layout is the marker that the layout is complete.
                atomic_write(self._root / "index.json", json.dumps(empty).encode(), overwrite=False)
                atomic_write(self._root / "oci-layout", LAYOUT_FILE_CONTENT, overwrite=False)
        self._ensured = True

    def _read_manifest(self, ref: str) -> Manifest:
        is_digest, value = _classify(ref)
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
        is_digest, value = _classify(ref)
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
        entry = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": len(manifest.raw),
            "annotations": {REF_NAME: tag},
        }
        with self._flocked():
            doc = self._load_index()
            if doc is None:
                raise GcrsyncError(f"{self.name}: the layout disappeared while writing")
            doc["manifests"] = [e for e in doc["manifests"] if _entry_tag(e) != tag] + [entry]
            self._write_index(doc)

    @contextmanager
    def _flocked(self) -> Iterator[None]:
        """Other processes' index.json read-modify-write cycles wait (ours are serialised by the asyncio lock)."""
        fd = os.open(self._root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _write_index(self, doc: dict[str, Any]) -> None:
        atomic_write(self._root / "index.json", json.dumps(doc, separators=(",", ":")).encode())

    def _remove_tag(self, tag: str, digest: str) -> bool:
        if not self._root.is_dir():
            return False  # no layout at all, so no tag either
        with self._flocked():
            doc = self._load_index()
            entries = doc["manifests"] if doc else []
            tagged = [e for e in entries if _entry_tag(e) == tag]
            if doc is None or not tagged or any(e.get("digest") != digest for e in tagged):
                return False  # not there, or moved on to other content since the plan: leave it alone
            doc["manifests"] = [e for e in entries if _entry_tag(e) != tag]
            self._write_index(doc)
            # Only content the removed tag reached is considered: blobs of a copy still in progress (not
            # referenced by index.json yet) or put there by other tools are never touched.
            kept = reachable([(e["digest"], e.get("mediaType")) for e in doc["manifests"]], self._manifest_bytes)
            if kept is None:  # some remaining manifest could not be read: keep everything rather than guess
                return True
            for unused in (reachable([(digest, tagged[0].get("mediaType"))], self._manifest_bytes) or set()) - kept:
                with suppress(FileNotFoundError):
                    self._blob_path(unused).unlink()
        return True

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
        doc = self._load_index()
        tags = [t for t in (_entry_tag(e) for e in (doc["manifests"] if doc else [])) if t is not None]
        return list(dict.fromkeys(tags))

    # ---- ImageStore ----

    async def get_manifest(self, ref: str) -> Manifest:
        return await asyncio.to_thread(self._read_manifest, ref)

    async def head_manifest(self, ref: str) -> Descriptor | None:
        return await asyncio.to_thread(self._head_manifest, ref)

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        is_digest, value = _classify(ref)
        try:  # parse_manifest knows what a digest covers (a signed schema1 one excludes its signatures)
            parse_manifest(manifest.raw, manifest.media_type, expected_digest=manifest.digest)
        except ManifestError as exc:
            raise DigestMismatch(f"{self.name}: refusing to store {manifest.digest}: {exc}") from None
        if is_digest and value != manifest.digest:
            raise DigestMismatch(f"{self.name}: cannot store manifest {manifest.digest} under digest {value}")
        await asyncio.to_thread(self._write_manifest_blob, manifest)
        if not is_digest:
            async with _index_lock(self._root):
                await asyncio.to_thread(self._set_tag, value, manifest)

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

    async def remove_tag(self, tag: str, digest: str) -> bool:
        """RemovesTags: drop the tag's index.json entry, then the manifests and blobs only it kept alive.

        False, and nothing deleted, when the tag is absent or points at another digest. Another tag on the
        same digest keeps all of it. Do not prune a layout another process is writing into at the same time:
        a blob it found present and is about to reference could go (as with a registry's garbage collection).
        """
        is_digest, value = _classify(tag)
        if is_digest:
            raise InvalidReference(f"{self.name}: remove_tag takes a tag, not the digest {value[:80]!r}")
        validate_digest(digest)
        async with _index_lock(self._root):
            return await asyncio.to_thread(self._remove_tag, value, digest)
