"""The one interface the copy engine needs from a place that holds images.

A registry repository (gcrsync.registry.Repository) and an OCI image layout (gcrsync.layout.LayoutRepository)
both implement it, so the engine copies registry→registry, registry→layout and layout→registry alike
(regclient's "schemes" idea).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

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

    async def list_tags(self) -> list[str]:
        """Every tag of the repository ([] if the repository does not exist)."""
        ...
