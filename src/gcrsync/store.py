"""The interface the copy engine needs from a place that holds images, and what some places can do more.

A registry repository (gcrsync.registry.Repository) and an OCI image layout (gcrsync.layout.LayoutRepository)
both implement `ImageStore`, so the engine copies registry→registry, registry→layout and layout→registry
alike (regclient's "schemes" idea). What only some places can do is an optional capability protocol
below; the engine and the sync ask `isinstance(store, Capability)` and never for a concrete class, so a new
kind of place only has to implement the protocols it supports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from gcrsync.oci import Descriptor, Manifest


class ImageStore(Protocol):
    """One repository (a registry repo, or one OCI layout directory)."""

    @property
    def name(self) -> str:
        """Human-readable location, e.g. 'localhost:5000/team/app' or 'oci:/tmp/out'. Never holds secrets."""
        ...

    @property
    def domain(self) -> str:
        """Stores of one domain can mount blobs from each other (one registry host; layouts on one filesystem)."""
        ...

    async def get_manifest(self, ref: str) -> Manifest:
        """Fetch and parse a manifest by tag or digest (verified against the digest when ref is one)."""
        ...

    async def head_manifest(self, ref: str) -> Descriptor | None:
        """Digest, size and media type of a tag or digest, or None if absent. Must not count as a pull."""
        ...

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        """Store the manifest's exact raw bytes under ref (a tag or its digest)."""
        ...

    async def blob_size(self, digest: str) -> int | None:
        """Size of a blob if present, else None."""
        ...

    def open_blob(self, desc: Descriptor) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob's bytes (unverified: the engine verifies while copying)."""
        ...

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        """Store a blob from a stream. Must not make it visible unless its digest verified."""
        ...

    async def mount_blob(self, desc: Descriptor, source: ImageStore) -> bool:
        """Make a blob known to be in `source` appear here without transfer; False if not possible."""
        ...


# -- optional capabilities ---------------------------------------------------------------------------


@runtime_checkable
class ListsTags(Protocol):
    """A place that can enumerate its tags."""

    async def list_tags(self) -> list[str]:
        """Every tag of the repository ([] if the repository does not exist)."""
        ...


@runtime_checkable
class ListsTagDigests(Protocol):
    """A place whose tag listing says what each tag holds (Artifact Registry's extended `tags/list`, the
    Docker Hub API): one listing then tells a plan the target's digests without a HEAD per tag."""

    @property
    def lists_digests(self) -> bool:
        """Whether tag_digests() is worth asking (known without a request)."""
        ...

    async def tag_digests(self) -> dict[str, str | None]:
        """Every tag with its digest (None for a tag the listing gives no digest for)."""
        ...


@runtime_checkable
class OpensSiblings(Protocol):
    """A place that can open the other repositories of its domain by name (one registry host), so blobs
    remembered in a sibling by an earlier run can be mounted from it."""

    @property
    def repository(self) -> str:
        """This repository's path within its domain, e.g. 'team/app'."""
        ...

    def sibling(self, repository: str) -> ImageStore:
        """Another repository of the same domain."""
        ...


@runtime_checkable
class RemovesTags(Protocol):
    """A place where a mirrored tag can be taken away again (prune)."""

    async def remove_tag(self, tag: str, digest: str) -> bool:
        """Remove `tag`, expected to point at `digest`, and whatever only it kept alive.

        A registry deletes the manifest by digest (every tag on it goes too: callers check that no other
        mirrored tag uses it); a layout drops the index entry and the blobs nothing references any more.
        False when it was not there. Raises GcrsyncError when the place refuses.
        """
        ...


@runtime_checkable
class CountsRequests(Protocol):
    """A place reached over the network, whose requests and retries are counted for the report."""

    def note_retry(self, reason: str) -> None:
        """Count a retry the engine made above the transport (e.g. a restarted streamed upload)."""
        ...


@runtime_checkable
class HasReferrers(Protocol):
    """A place that knows OCI 1.1 referrers: through the referrers API where it has one, else through the
    spec's fallback tag `<alg>-<hex>` (an index of the referrers, kept by whoever pushes them)."""

    async def referrers(self, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]] | None:
        """Index entries of the manifests whose subject is `digest`; None without a referrers API."""
        ...

    async def fallback_referrers(self, digest: str) -> tuple[list[dict[str, Any]], str | None]:
        """The entries of the fallback tag of `digest`, and that index's digest (None when absent)."""
        ...

    async def add_fallback_referrers(self, digest: str, entries: list[dict[str, Any]]) -> bool:
        """Make the fallback tag of `digest` list `entries` too (idempotent); True when it changed."""
        ...

    async def has_referrers_api(self) -> bool:
        """Whether pushing a manifest with a subject indexes it here by itself."""
        ...
