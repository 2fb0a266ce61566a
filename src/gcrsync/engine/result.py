"""What one image copy did: the record the run, the ledger and the report are built from.

Its own module because both the graph copy (engine.copy) and the blob mover (engine.blobs) fill it in,
and the copy imports the mover: keeping it here keeps the two free of an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attached:
    subject: str  # the digest it is attached to
    digest: str  # the artifact's manifest digest (the same at both ends)
    kind: str  # "referrer", or the tag-schema suffix: "sig", "att", "sbom", …
    artifact_type: str | None = None
    tag: str | None = None  # the tag-schema tag, for kind != "referrer"
    copied: bool = False  # False: it was at the target already

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"digest": self.digest, "kind": self.kind, "subject": self.subject}
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.tag:
            doc["tag"] = self.tag
        return doc


@dataclass
class ImageResult:
    source: str
    target: str
    digest: str = ""  # digest now at the target tag
    source_digest: str = ""  # digest of the source tag (differs from digest only when platforms were filtered)
    media_type: str = ""
    state: str = "copied"  # copied | unchanged | skipped (platform not wanted) | failed
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    manifests_pushed: int = 0
    error: str | None = None
    platforms: list[str] = field(default_factory=list)
    sparse_children_missing: int = 0  # children of a sparse source index that were absent there (not copied)
    # Digests at both ends that artifacts can be attached to: the tagged manifest (unless a platform subset
    # made a new one) and the index's children.
    subjects: list[str] = field(default_factory=list)
    artifacts: list[Attached] = field(default_factory=list)  # attached to the image now (engine.artifacts)
    artifacts_error: str | None = None  # the image is there, but mirroring what is attached to it failed
