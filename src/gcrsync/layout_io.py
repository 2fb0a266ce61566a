"""File primitives of the OCI layout store: durable atomic writes, sizes, hashing and streamed reads.

Everything a reader may see appears by an atomic rename of a fully written, fsynced temp file (prefix
TMP_PREFIX, so leftovers of a crash are recognisable). The blocking calls here are run in worker threads
by gcrsync.layout; they are kept apart from it so the layout module holds the layout's logic only.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncGenerator
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

from gcrsync.oci import new_hasher

CHUNK_SIZE = 1 << 20  # read/write granularity: one thread hop per MiB keeps overhead negligible
TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write data to path via a fsynced temp file; with overwrite=False an existing file wins."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
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
        fsync_dir(path.parent)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def open_read(path: Path) -> BinaryIO:
    return path.open("rb")


def write_and_hash(f: BinaryIO, hasher: Any, data: bytes) -> None:
    hasher.update(data)  # hashlib releases the GIL on large buffers, so this runs truly in parallel
    f.write(data)


def finish_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def hash_file(path: Path, digest: str) -> str:
    hasher = new_hasher(digest)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            hasher.update(chunk)
    return f"{hasher.name}:{hasher.hexdigest()}"


async def iter_file(f: BinaryIO) -> AsyncGenerator[bytes, None]:
    while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
        yield chunk
