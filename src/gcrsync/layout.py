"""An OCI image layout directory (`oci:PATH[:TAG]`) as an ImageStore, so the engine can copy to and from disk.

Layout per the OCI image spec: `oci-layout` ({"imageLayoutVersion": "1.0.0"}), `index.json` (tags are the
`org.opencontainers.image.ref.name` annotations of its entries) and content-addressed `blobs/<alg>/<hex>`.
Manifests are blobs too; only tagged roots are listed in index.json, children of an index are plain blobs.

Crash and concurrency safety: every file becomes visible only by an atomic rename of a fully written, fsynced
temp file (a blob only once its digest verified), and index.json read-modify-write cycles are serialised by an
asyncio.Lock per layout (coroutines of one process) plus flock on the layout directory (other processes).
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
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from gcrsync.errors import DigestMismatch, GcrsyncError, InvalidReference, ManifestError, NotFound
from gcrsync.oci import (
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    Manifest,
    new_hasher,
    parse_manifest,
    validate_digest,
)
from gcrsync.store import ImageStore

CHUNK_SIZE = 1 << 20  # read/write granularity: one thread hop per MiB keeps overhead negligible
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'
_LAYOUT_VERSION_RE = re.compile(r"^1\.\d+\.\d+$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_TMP_PREFIX = ".tmp-"

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


def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write data to path via a fsynced temp file; with overwrite=False an existing file wins."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            with suppress(FileExistsError):  # link never replaces: a concurrent creator's file is kept
                os.link(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _open_read(path: Path) -> BinaryIO:
    return path.open("rb")


def _write_and_hash(f: BinaryIO, hasher: Any, data: bytes) -> None:
    hasher.update(data)  # hashlib releases the GIL on large buffers, so this runs truly in parallel
    f.write(data)


def _finish_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _hash_file(path: Path, digest: str) -> str:
    hasher = new_hasher(digest)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            hasher.update(chunk)
    return f"{hasher.name}:{hasher.hexdigest()}"


async def _iter_file(f: BinaryIO) -> AsyncGenerator[bytes, None]:
    while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
        yield chunk


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
                _atomic_write(self._root / "index.json", json.dumps(empty).encode(), overwrite=False)
                _atomic_write(self._root / "oci-layout", LAYOUT_FILE_CONTENT, overwrite=False)
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
        actual_size = _size_or_none(path)
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
            if desc is None or _size_or_none(self._blob_path(desc.digest)) != desc.size:
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
            if not desc.foreign and _size_or_none(self._blob_path(desc.digest)) is None:
                raise NotFound(f"{self.name}: {manifest.digest} references missing {desc.digest}")
        path = self._blob_path(manifest.digest)
        if _size_or_none(path) == len(manifest.raw):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, manifest.raw)

    def _set_tag(self, tag: str, manifest: Manifest) -> None:
        entry = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": len(manifest.raw),
            "annotations": {REF_NAME: tag},
        }
        fd = os.open(self._root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # other processes; coroutines of ours are serialised already
            doc = self._load_index()
            if doc is None:
                raise GcrsyncError(f"{self.name}: the layout disappeared while writing")
            doc["manifests"] = [e for e in doc["manifests"] if _entry_tag(e) != tag] + [entry]
            _atomic_write(self._root / "index.json", json.dumps(doc, separators=(",", ":")).encode())
        finally:
            os.close(fd)  # releases the flock

    def _link_from(self, desc: Descriptor, source: LayoutRepository) -> bool:
        target = self._blob_path(desc.digest)
        if _size_or_none(target) is not None and (desc.size < 0 or _size_or_none(target) == desc.size):
            return True
        origin = source._blob_path(desc.digest)
        size = _size_or_none(origin)
        if size is None or (desc.size >= 0 and size != desc.size):
            return False
        # Hashing is a read only (cheaper than the copy it saves) and keeps "visible means verified" true.
        if _hash_file(origin, desc.digest) != desc.digest:
            return False
        self._ensure_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{_TMP_PREFIX}link-{uuid.uuid4().hex}"
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
        return await asyncio.to_thread(_size_or_none, self._blob_path(digest))

    @asynccontextmanager
    async def open_blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._blob_path(desc.digest)
        try:
            f = await asyncio.to_thread(_open_read, path)
        except FileNotFoundError:
            raise NotFound(f"{self.name}: blob {desc.digest} not found") from None
        chunks = _iter_file(f)
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
        existing = await asyncio.to_thread(_size_or_none, path)
        if existing is not None and (desc.size < 0 or existing == desc.size):
            return
        await asyncio.to_thread(self._ensure_layout)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp = await asyncio.to_thread(tempfile.mkstemp, dir=path.parent, prefix=_TMP_PREFIX)
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
                    await asyncio.to_thread(_write_and_hash, f, hasher, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(_write_and_hash, f, hasher, bytes(pending))
            await asyncio.to_thread(_finish_file, f)
            actual = f"{hasher.name}:{hasher.hexdigest()}"
            if desc.size >= 0 and total != desc.size:
                raise DigestMismatch(f"{self.name}: blob {desc.digest} is {total} bytes, not {desc.size}")
            if actual != desc.digest:
                raise DigestMismatch(f"{self.name}: blob bytes hash to {actual}, not {desc.digest}")
            await asyncio.to_thread(os.replace, tmp, path)
            committed = True
            await asyncio.to_thread(_fsync_dir, path.parent)
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
