"""Where metadata repositories live on disk: the default directory and the cache clone of a remote."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["default_metadata_dir", "is_bare_repo", "slug"]


def default_metadata_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local metadata repository used when none is configured (the user's data directory)."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "gcrsync" / "metadata"


def slug(url: str) -> str:
    """A readable, collision-free directory name for the cache clone of a remote."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"^[a-z+]+://", "", url)).strip("._-")[:60]
    return f"{readable or 'remote'}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def is_bare_repo(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir() \
        and not (path / ".git").exists()
