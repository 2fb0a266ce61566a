"""Referrers in an OCI image layout: the manifests of index.json whose `subject` is a given digest.

A layout has no referrers API, so it answers the way oras and zot do: every referrer pushed into it becomes
an untagged root of index.json, and listing the referrers of a digest reads the manifests of the entries
(each once per `Subjects`: a manifest never changes under its digest). A referrers index kept under the
spec's fallback tag `sha256-<hex>` by other tools is read too. When the last tag of an image goes (prune),
its untagged referrers go with it, and theirs in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gcrsync.errors import ManifestError
from gcrsync.layout.index import Entry, entry_tag
from gcrsync.oci import parse_manifest, referrer_entry


class Subjects:
    """What the manifests of a layout refer to: each blob is read and parsed at most once."""

    def __init__(self, read: Callable[[str], bytes | None]) -> None:
        self._read = read
        self._known: dict[str, tuple[str | None, dict[str, Any] | None]] = {}

    def _look(self, entry: Entry) -> tuple[str | None, dict[str, Any] | None]:
        digest = entry["digest"]
        if digest not in self._known:
            raw = self._read(digest)
            found: tuple[str | None, dict[str, Any] | None] = (None, None)
            if raw:
                try:
                    manifest = parse_manifest(raw, entry.get("mediaType") or None, expected_digest=digest)
                except ManifestError:
                    manifest = None  # not a manifest we can read: it refers to nothing we know of
                if manifest is not None and manifest.subject is not None:
                    found = (manifest.subject.digest, referrer_entry(manifest))
            self._known[digest] = found
        return self._known[digest]

    def subject_of(self, entry: Entry) -> str | None:
        return self._look(entry)[0]

    def listing(self, entry: Entry) -> dict[str, Any] | None:
        """The entry as the referrers API would list it (artifactType, annotations); None if no referrer."""
        return self._look(entry)[1]


def by_subject(entries: Iterable[Entry], subjects: Subjects) -> dict[str, list[Entry]]:
    """The roots of index.json that are referrers, grouped by their subject's digest."""
    out: dict[str, list[Entry]] = {}
    for entry in entries:
        subject = subjects.subject_of(entry)
        if subject is not None:
            out.setdefault(subject, []).append(entry)
    return out


def referrers_of(entries: Iterable[Entry], subject: str, subjects: Subjects) -> list[dict[str, Any]]:
    """The referrers of `subject` among the roots of index.json, once each, in index order."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry["digest"] not in out and subjects.subject_of(entry) == subject:
            listed = subjects.listing(entry)
            if listed is not None:
                out[entry["digest"]] = listed
    return list(out.values())


def dependents(entries: Iterable[Entry], gone: set[str], subjects: Subjects) -> set[str]:
    """Digests of the untagged referrer roots that refer, directly or through each other, to `gone`."""
    untagged = [e for e in entries if entry_tag(e) is None]
    doomed: set[str] = set()
    frontier = set(gone)
    while frontier:
        frontier = {e["digest"] for e in untagged
                    if e["digest"] not in doomed and subjects.subject_of(e) in frontier}
        doomed |= frontier
    return doomed


def untagged_entry(listed: dict[str, Any]) -> Entry:
    """The index.json root for a referrer: its descriptor and artifactType, no tag, no annotations."""
    entry: Entry = {k: listed[k] for k in ("mediaType", "digest", "size") if k in listed}
    if "artifactType" in listed:
        entry["artifactType"] = listed["artifactType"]
    return entry
