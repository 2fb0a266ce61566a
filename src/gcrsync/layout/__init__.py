"""OCI image layouts on disk: `LayoutRepository` (gcrsync.layout.repository) behind the ImageStore protocol,
the index.json document (gcrsync.layout.index) and referrers kept as untagged roots (gcrsync.layout.referrers)."""

from gcrsync.layout.index import REF_NAME
from gcrsync.layout.repository import LayoutRepository

__all__ = ["REF_NAME", "LayoutRepository"]
