"""The files that make a directory an OCI image layout: `oci-layout` and `index.json`.

`index.json` is an image index whose entries are the layout's roots: tagged ones carry the tag as the
`org.opencontainers.image.ref.name` annotation; untagged ones are referrers (signatures, SBOMs), kept there
so they can be found without a tag, as oras and zot do (opencontainers/image-spec#1171 describes the
practice). Every change is a read-modify-write of the whole document under `IndexFile.flocked` (other
processes) and the caller's `index_lock` (coroutines of this process), and becomes visible by an atomic
rename. All methods do blocking I/O: callers run them in worker threads.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gcrsync.errors import GcrsyncError, InvalidReference, ManifestError
from gcrsync.layout_io import atomic_write
from gcrsync.oci import OCI_INDEX, Descriptor, validate_digest

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'
_LAYOUT_VERSION_RE = re.compile(r"^1\.\d+\.\d+$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# asyncio.Lock binds to the loop that first waits on it, so locks are kept per running loop (tests and
# tools may run several loops one after another); within a loop there is one lock per resolved layout path.
_INDEX_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
# Creating a layout writes two files; other threads must not see (or make) half of one. Reentrant: creating
# reads the layout first.
_CREATE_LOCK = threading.RLock()

Entry = dict[str, Any]


def index_lock(root: Path) -> asyncio.Lock:
    per_loop = _INDEX_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(root, asyncio.Lock())


def classify(ref: str) -> tuple[bool, str]:
    """(is_digest, ref): a ref with a colon must be a digest, anything else a tag."""
    if ":" in ref:
        try:
            return True, validate_digest(ref)
        except ManifestError:
            raise InvalidReference(f"invalid digest reference {ref[:80]!r}") from None
    if not _TAG_RE.match(ref):
        raise InvalidReference(f"invalid tag {ref[:80]!r}")
    return False, ref


def entry_tag(entry: Entry) -> str | None:
    annotations = entry.get("annotations")
    tag = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return tag if isinstance(tag, str) else None


class IndexFile:
    """`oci-layout` and `index.json` of the layout at `root` (`name` is how errors name the layout)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        # index.json as last read: its stat stamp, its bytes and its validated document
        self._last: tuple[tuple[int, int, int, int], bytes, dict[str, Any]] | None = None
        self._maps_for: tuple[list[Entry], dict[str, tuple[int, Entry]], dict[str, str]] | None = None

    def load(self) -> dict[str, Any] | None:
        """The validated index.json document, or None when there is no layout at all."""
        layout_raw = self._marker()
        if layout_raw is None:
            return None
        try:
            version = json.loads(layout_raw).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str) or not _LAYOUT_VERSION_RE.match(version):
            raise GcrsyncError(f"{self.name}: oci-layout is malformed or not imageLayoutVersion 1.x")
        # Unchanged since the last read (the same file, by its inode, size and times, or the same bytes):
        # parsing and validating it again for each image of a run made a no-op into a layout of N images
        # cost N² (1,000 signed images: 13 s of referrer lookups, 0.2 s now).
        path = self.root / "index.json"
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._last is not None and self._last[0] == stamp:
                return dict(self._last[2])  # callers rebind "manifests", never change the list or its entries
            raw = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"{self.name}: cannot read index.json: {exc.strerror}") from None
        if self._last is not None and self._last[1] == raw:
            self._last = (stamp, raw, self._last[2])
            return dict(self._last[2])
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
        self._last = (stamp, raw, doc)
        return dict(doc)

    def _marker(self) -> bytes | None:
        """The oci-layout file, None when the directory is no layout at all."""
        try:
            return (self.root / "oci-layout").read_bytes()
        except FileNotFoundError:
            if not (self.root / "index.json").exists():
                return None
            # index.json is written first when a layout is created: one being created by another thread of
            # this process is complete once its lock is free. Without one, the layout is broken.
            with _CREATE_LOCK:
                try:
                    return (self.root / "oci-layout").read_bytes()
                except FileNotFoundError:
                    raise GcrsyncError(f"{self.name}: has index.json but no oci-layout file") from None
        except OSError as exc:
            raise GcrsyncError(f"{self.name}: cannot read oci-layout: {exc.strerror}") from None

    def tagged(self, tag: str) -> tuple[int, Entry] | None:
        """The first entry tagged `tag`, and its position in index.json."""
        return self._maps()[0].get(tag)

    def media_type(self, digest: str) -> str | None:
        """The media type the first entry with this digest gives it, if any."""
        return self._maps()[1].get(digest)

    def _maps(self) -> tuple[dict[str, tuple[int, Entry]], dict[str, str]]:
        doc = self.load()
        entries: list[Entry] = doc["manifests"] if doc else []
        if self._maps_for is None or self._maps_for[0] is not entries:  # built once per version of the file
            tags: dict[str, tuple[int, Entry]] = {}
            types: dict[str, str] = {}
            for i, entry in enumerate(entries):
                tag = entry_tag(entry)
                if tag is not None:
                    tags.setdefault(tag, (i, entry))
                if entry.get("mediaType"):
                    types.setdefault(entry["digest"], str(entry["mediaType"]))
            self._maps_for = (entries, tags, types)
        return self._maps_for[1], self._maps_for[2]

    def entries(self) -> list[Entry]:
        doc = self.load()
        return list(doc["manifests"]) if doc else []

    def create(self) -> None:
        """Make the directory a layout if it is not one yet (index.json first: oci-layout marks it done)."""
        with _CREATE_LOCK:
            if self.load() is not None:
                return
            try:
                (self.root / "blobs").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GcrsyncError(f"{self.name}: cannot create layout: {exc.strerror}") from None
            empty = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
            atomic_write(self.root / "index.json", json.dumps(empty).encode(), overwrite=False)
            atomic_write(self.root / "oci-layout", LAYOUT_FILE_CONTENT, overwrite=False)

    @contextmanager
    def flocked(self) -> Iterator[None]:
        """Other processes' index.json read-modify-write cycles wait (ours are serialised by `index_lock`)."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.root / "index.json", json.dumps(doc, separators=(",", ":")).encode())

    def add_untagged(self, entry: Entry) -> bool:
        """Add an untagged root (a referrer) unless one with its digest is there; True when written."""
        with self.flocked():
            doc = self.load()
            if doc is None:
                raise GcrsyncError(f"{self.name}: the layout disappeared while writing")
            if any(e.get("digest") == entry["digest"] and entry_tag(e) is None for e in doc["manifests"]):
                return False
            doc["manifests"] = [*doc["manifests"], entry]
            self.write(doc)
            return True

    def set_tag(self, tag: str, entry: Entry) -> None:
        """Point `tag` at `entry` (mediaType, digest, size), replacing whatever it pointed at."""
        tagged = {**entry, "annotations": {REF_NAME: tag}}
        with self.flocked():
            doc = self.load()
            if doc is None:
                raise GcrsyncError(f"{self.name}: the layout disappeared while writing")
            doc["manifests"] = [e for e in doc["manifests"] if entry_tag(e) != tag] + [tagged]
            self.write(doc)
