"""The knobs of a sync run, set by the CLI from flags and config or by a library user (SyncOptions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gcrsync.config import MaxRemoved
from gcrsync.engine.blobcache import BlobLocations
from gcrsync.engine.plan import SourceSpec
from gcrsync.sync.shard import Shard


@dataclass
class SyncOptions:
    jobs: int = 4
    query_jobs: int = 8
    trust_ledger: bool = False
    dry_run: bool = False
    blob_locations: BlobLocations | None = None  # cross-run mount hints (the CLI passes the user's cache)
    prune: bool = False  # delete target tags whose source tag is gone (targets that can remove tags)
    image_deadline: float | None = None
    stop_grace: float = 60.0  # seconds images in flight may take after SIGTERM/SIGINT before they are given up
    max_removed: MaxRemoved = field(default_factory=lambda: MaxRemoved("25%"))  # the removal guard (sync.guard)
    shard: Shard | None = None  # only this share of the repositories (sync.shard); None: all of them
    # Namespaces (labels) whose target is verified fully (a HEAD per tag); the others' targets are checked
    # by presence in their tag lists (sync.verification). None: every namespace is verified fully.
    verify_target: frozenset[str] | None = None

    def verifies(self, spec: SourceSpec) -> bool:
        return self.verify_target is None or spec.label in self.verify_target
