"""Several shards' `--report` files read as one run: images per state, bytes pulled, cross-shard duplicates.

Shards do not talk to each other, so a layer two shards both need may be pulled from the source by both
(at the same moment, before either pushed it; or on separate machines when no peer repository held it
yet). Each report lists the blobs its shard pulled; a digest in two reports is a cross-shard duplicate pull.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcrsync.errors import ConfigError
from gcrsync.sync.shard import Shard


@dataclass
class MergedReports:
    shards: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # shards of the split without a report
    states: dict[str, int] = field(default_factory=dict)
    bytes_pulled: int = 0
    unique_bytes_pulled: int = 0
    duplicate_blobs: int = 0  # blobs pulled by more than one shard
    duplicate_bytes: int = 0  # bytes pulled beyond the first shard's pull of each such blob
    peer_mounts: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the report: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pulled_blobs"), dict):
        raise ConfigError(f"{path}: not a gcrsync sync --report of this version (no pulled_blobs)")
    return doc


def merge_reports(paths: list[Path]) -> MergedReports:
    merged = MergedReports()
    per_blob: dict[str, list[int]] = {}
    count: int | None = None
    for path in paths:
        doc = _load(path)
        label = doc.get("shard") or "0/1"
        shard = Shard.parse(str(label), {})
        if count is not None and shard.count != count:
            raise ConfigError(f"{path}: shard {label} is not of the same split as the others ({count} shards)")
        count = shard.count
        merged.shards.append(str(shard))
        for state, n in doc.get("totals", {}).get("states", {}).items():
            merged.states[state] = merged.states.get(state, 0) + int(n)
        merged.peer_mounts += int(doc.get("totals", {}).get("blobs_mounted_from_other_shards", 0))
        for digest, size in doc["pulled_blobs"].items():
            per_blob.setdefault(digest, []).append(int(size))
    if count is not None:
        merged.missing = [str(Shard(i, count)) for i in range(count) if str(Shard(i, count)) not in merged.shards]
    for sizes in per_blob.values():
        merged.bytes_pulled += sum(sizes)
        merged.unique_bytes_pulled += max(sizes)
        if len(sizes) > 1:
            merged.duplicate_blobs += 1
            merged.duplicate_bytes += sum(sizes) - max(sizes)
    return merged
