"""Pure data types shared by the layers (no I/O, no imports above `errors`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class TagInfo:
    """What a listing API told us about one tag; every field is optional because plain tags/list has none."""

    digest: str | None = None
    media_type: str | None = None
    pushed_at: datetime | None = None
    size: int | None = None
    sparse: bool = False  # a manifest list the source says is sparse (quay: children may be absent)


@dataclass
class DiscoveredRepo:
    """One repository of a namespace listing and its tags."""

    repository: str  # full path on the registry, e.g. "google-containers/pause"
    tags: dict[str, TagInfo]
