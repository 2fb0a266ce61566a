"""gcrsync: mirror whole namespaces of container images between registries, with a git ledger.

The public library API is importable from here. Names load on first use (PEP 562), so the command line,
which imports this package first, does not pay for modules a command does not need.

    import asyncio
    from gcrsync import BlobMover, CredentialStore, RegistryClient, Transport, copy_image

    async def main() -> None:
        async with Transport() as transport:
            client = RegistryClient(transport, CredentialStore())
            src = client.repository("registry.k8s.io", "pause")
            dst = client.repository("localhost:5000", "mirror/pause")
            result = await copy_image(src, "3.9", dst, "3.9", BlobMover())
            print(result.digest)

    asyncio.run(main())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BlobMover": "gcrsync.engine.blobs",
    "CopyOptions": "gcrsync.engine.copy",
    "ImageResult": "gcrsync.engine.result",
    "copy_image": "gcrsync.engine.copy",
    "Config": "gcrsync.config",
    "load_config": "gcrsync.config",
    "parse_config": "gcrsync.config",
    "CredentialStore": "gcrsync.registry.credentials",
    "Credential": "gcrsync.registry.credentials",
    "RegistryClient": "gcrsync.registry.client",
    "Repository": "gcrsync.registry.client",
    "Transport": "gcrsync.registry.transport",
    "TransportOptions": "gcrsync.registry.transport",
    "LayoutRepository": "gcrsync.layout",
    "ImageStore": "gcrsync.store",
    "Manifest": "gcrsync.oci",
    "Descriptor": "gcrsync.oci",
    "Platform": "gcrsync.oci",
    "parse_manifest": "gcrsync.oci",
    "Reference": "gcrsync.reference",
    "parse_reference": "gcrsync.reference",
    "parse_location": "gcrsync.reference",
    "Mirror": "gcrsync.sync",
    "SyncOptions": "gcrsync.sync",
    "SyncReport": "gcrsync.sync",
    "SourceSpec": "gcrsync.engine.plan",
    "TagPolicy": "gcrsync.engine.select",
    "MetadataRepo": "gcrsync.ledger.metadata",
    "GcrsyncError": "gcrsync.errors",
}

__all__ = [
    "BlobMover",
    "Config",
    "CopyOptions",
    "Credential",
    "CredentialStore",
    "Descriptor",
    "GcrsyncError",
    "ImageResult",
    "ImageStore",
    "LayoutRepository",
    "Manifest",
    "MetadataRepo",
    "Mirror",
    "Platform",
    "Reference",
    "RegistryClient",
    "Repository",
    "SourceSpec",
    "SyncOptions",
    "SyncReport",
    "TagPolicy",
    "Transport",
    "TransportOptions",
    "__version__",
    "copy_image",
    "load_config",
    "parse_config",
    "parse_location",
    "parse_manifest",
    "parse_reference",
]

if TYPE_CHECKING:
    from gcrsync.config import Config, load_config, parse_config
    from gcrsync.engine.blobs import BlobMover
    from gcrsync.engine.copy import CopyOptions, copy_image
    from gcrsync.engine.plan import SourceSpec
    from gcrsync.engine.result import ImageResult
    from gcrsync.engine.select import TagPolicy
    from gcrsync.errors import GcrsyncError
    from gcrsync.layout import LayoutRepository
    from gcrsync.ledger.metadata import MetadataRepo
    from gcrsync.oci import Descriptor, Manifest, Platform, parse_manifest
    from gcrsync.reference import Reference, parse_location, parse_reference
    from gcrsync.registry.client import RegistryClient, Repository
    from gcrsync.registry.credentials import Credential, CredentialStore
    from gcrsync.registry.transport import Transport, TransportOptions
    from gcrsync.store import ImageStore
    from gcrsync.sync import Mirror, SyncOptions, SyncReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gcrsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
