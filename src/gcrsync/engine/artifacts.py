"""Artifacts attached to the images we mirror — signatures, attestations, SBOMs — travel with them.

An artifact is attached in one of two ways (../shared/research/registries.md, with sources):
- cosign's tag schema: tags `sha256-<hex>.sig`, `.att`, `.sbom` (any `sha256-<hex>.<suffix>`) next to the
  image. They are found in the tag listing the run already has, so detecting them costs no request.
- OCI 1.1 referrers: manifests whose `subject` is the image, listed by the referrers API or, where a
  registry has none, by the spec's fallback tag `sha256-<hex>` (an index; its presence is also in the
  listing, so a source without the API and without that tag costs no request either).
At the target an artifact keeps its digest; a registry with the referrers API indexes it by itself, any
other gets the fallback tag updated (read-modify-write, idempotent). Artifacts of artifacts (a signature
on an attestation) follow, up to MAX_DEPTH. Only artifacts of images we mirror are copied: an attached tag
is never selected on its own.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import CopyOptions, copy_image
from gcrsync.engine.result import Attached
from gcrsync.errors import error_text
from gcrsync.oci import fallback_tag
from gcrsync.store import HasReferrers, ImageStore, ListsTags

log = logging.getLogger("gcrsync.artifacts")

MAX_DEPTH = 3  # image ← signature ← signature of the signature: deeper is abuse or a loop


@dataclass
class ArtifactPolicy:
    """`referrers:` and `artifact_types:` of a source: whether attached artifacts are mirrored, which."""

    enabled: bool = True
    # Shell-style patterns on artifactType (media types are full of "+" and ".", which a regex would
    # misread): "application/spdx+json", "application/vnd.dev.cosign.*". Empty include = every type.
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def wanted(self, artifact_type: str | None) -> bool:
        kind = artifact_type or ""
        if self.include and not any(fnmatch.fnmatchcase(kind, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(kind, p) for p in self.exclude)


async def copy_attached(
    src: ImageStore,
    dst: ImageStore,
    subjects: list[str],
    mover: BlobMover,
    policy: ArtifactPolicy,
    *,
    source_tags: Collection[str] | None = None,
    depth: int = 0,
) -> list[Attached]:
    """Mirror what is attached to each subject digest from src to dst; returns what is attached now.

    `source_tags`: the source repository's tags when the caller has them (a sync's listing), so the tag
    schema and the fallback tag cost no request; None asks the source (one tag listing) when it can.
    """
    if not policy.enabled or not subjects or depth > MAX_DEPTH:
        return []
    if source_tags is None:
        source_tags = await src.list_tags() if isinstance(src, ListsTags) else ()
    found: list[Attached] = []
    for subject in subjects:
        found += await _tag_schema(src, dst, subject, mover, source_tags)
        found += await _referrers(src, dst, subject, mover, policy, source_tags)
    below = [a.digest for a in found if a.copied or depth == 0]
    if below and depth < MAX_DEPTH:
        found += await copy_attached(src, dst, below, mover, policy, source_tags=source_tags, depth=depth + 1)
    return found


async def _tag_schema(src: ImageStore, dst: ImageStore, subject: str, mover: BlobMover,
                      source_tags: Collection[str]) -> list[Attached]:
    stem = fallback_tag(subject) + "."
    out = []
    for tag in sorted(t for t in source_tags if t.startswith(stem)):
        result = await copy_image(src, tag, dst, tag, mover, CopyOptions(check_target=True))
        out.append(Attached(subject, result.digest, tag[len(stem):], tag=tag, copied=result.state == "copied"))
    return out


async def _referrers(src: ImageStore, dst: ImageStore, subject: str, mover: BlobMover, policy: ArtifactPolicy,
                     source_tags: Collection[str]) -> list[Attached]:
    if not isinstance(src, HasReferrers):
        return []
    entries = await src.referrers(subject)
    if entries is None:  # no referrers API at the source: its fallback tag, if the listing has one
        if fallback_tag(subject) not in source_tags:
            return []
        entries, _ = await src.fallback_referrers(subject)
    entries = [e for e in entries if policy.wanted(e.get("artifactType"))]
    if not entries:
        return []
    native = isinstance(dst, HasReferrers) and await dst.has_referrers_api()
    present: set[str] = set()
    if isinstance(dst, HasReferrers):
        listed = await dst.referrers(subject) if native else (await dst.fallback_referrers(subject))[0]
        present = {e["digest"] for e in listed or []}
    out = []
    for entry in entries:
        digest = entry["digest"]
        copied = False
        if digest not in present:
            result = await copy_image(src, digest, dst, digest, mover, CopyOptions(check_target=True))
            copied = result.state == "copied"
        out.append(Attached(subject, digest, "referrer", entry.get("artifactType"), copied=copied))
    if isinstance(dst, HasReferrers) and not native and any(e["digest"] not in present for e in entries):
        await dst.add_fallback_referrers(subject, entries)  # its own read-modify-write: the tag may have moved
    elif not isinstance(dst, HasReferrers):
        log.warning("%s cannot index referrers: %d artifact(s) of %s copied by digest only",
                    dst.name, len(entries), subject[:19])
    return out


async def attach(src: ImageStore, dst: ImageStore, subjects: list[str], mover: BlobMover, policy: ArtifactPolicy,
                 source_tags: Collection[str] | None) -> tuple[list[Attached], str | None]:
    """copy_attached for one image of a run: a failure is returned (the image itself is there), not raised."""
    try:
        return await copy_attached(src, dst, subjects, mover, policy, source_tags=source_tags), None
    except Exception as exc:  # one image's artifacts must not sink the run
        return [], f"attached artifacts: {error_text(exc)}"
