"""Facts remembered across runs in a small SQLite file: where blobs were last seen at each target
registry, and the platform of single-platform image manifests.

Within a run the BlobMover knows which target repositories hold a blob; this extends that to the next
process: `gcrsync copy` of the tenth image sharing a base layer mounts it from a repository an earlier
copy filled, instead of pulling it from the source again (skopeo's BlobInfoCache does the same). An entry
is only a hint: a mount that fails removes it and the blob is copied as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger("gcrsync.blobcache")

MAX_HINTS = 3  # mount attempts per blob from remembered repositories before copying it


def default_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gcrsync" / "blob-locations.sqlite"


class BlobLocations:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a lost hint costs one copy, not correctness
                db.execute("CREATE TABLE IF NOT EXISTS seen (registry TEXT, digest TEXT, repository TEXT, "
                           "PRIMARY KEY (registry, digest, repository))")
                # A manifest digest's platform never changes (content addressing): remembered so a platform
                # subset can skip single-platform images of other platforms without fetching them again.
                db.execute("CREATE TABLE IF NOT EXISTS platforms (digest TEXT PRIMARY KEY, platform TEXT)")
                self._db = db
            except (OSError, sqlite3.Error) as exc:  # a cache must never break a run
                log.debug("blob location cache unavailable: %s", exc)
                return None
        return self._db

    def holders(self, registry: str, digest: str) -> list[str]:
        db = self._conn()
        if db is None:
            return []
        try:
            rows = db.execute("SELECT repository FROM seen WHERE registry=? AND digest=? LIMIT ?",
                              (registry, digest, MAX_HINTS)).fetchall()
        except sqlite3.Error:
            return []
        return [str(r[0]) for r in rows]

    def add(self, registry: str, digest: str, repository: str) -> None:
        db = self._conn()
        if db is not None:
            try:
                db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (registry, digest, repository))
            except sqlite3.Error as exc:
                log.debug("blob location cache write failed: %s", exc)

    def forget(self, registry: str, digest: str, repository: str) -> None:
        db = self._conn()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("DELETE FROM seen WHERE registry=? AND digest=? AND repository=?",
                           (registry, digest, repository))

    def platform(self, digest: str) -> str | None:
        db = self._conn()
        if db is None:
            return None
        try:
            row = db.execute("SELECT platform FROM platforms WHERE digest=?", (digest,)).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def set_platform(self, digest: str, platform: str) -> None:
        db = self._conn()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO platforms VALUES (?, ?)", (digest, platform))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
