"""An exclusive, crash-proof lock on a metadata working copy (one run at a time).

The lock file holds the holder's pid (for the message), but the lock itself is an flock on it: the kernel
drops it when the holder dies, so a lock left by a crash is always recognised as stale, even if its pid has
been reused, and two processes can never both "take over" the same stale lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from gcrsync.errors import LedgerError

log = logging.getLogger(__name__)


class RepoLocked(LedgerError):
    """Another process (a running sync) holds the metadata repository's lock."""


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def pid_lock(path: Path) -> Iterator[None]:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RepoLocked(f"metadata repository is locked by pid {pid or 'unknown'}") from None
            raise LedgerError(f"cannot lock the metadata repository: {exc}") from None
        try:  # a releasing holder unlinks the file: make sure we locked the one that is still there
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stale = _read_pid(fd)
        if stale is not None:
            log.warning("taking over a stale metadata lock left by pid %d", stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
