"""Turn a parsed location (registry reference or `oci:` layout) into an ImageStore and a ref."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gcrsync.layout import LayoutRepository
from gcrsync.reference import LayoutReference, Reference
from gcrsync.store import ImageStore


class OpensRepositories(Protocol):
    """What the engine needs from a registry client (gcrsync.registry.RegistryClient): typed by shape, so
    the engine depends on the store interface and never on the HTTP client it is being built against."""

    def repository(self, host: str, repository: str) -> ImageStore: ...


def open_store(client: OpensRepositories, location: Reference | LayoutReference, *, create: bool) -> ImageStore:
    if isinstance(location, LayoutReference):
        return LayoutRepository(Path(location.path), create=create)
    return client.repository(location.registry, location.repository)


def ref_of(location: Reference | LayoutReference, default: str = "latest") -> str:
    if isinstance(location, LayoutReference):
        return location.tag or default
    return location.digest or location.tag or default
