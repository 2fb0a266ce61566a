"""The ImageStores of a run, opened once per location (Endpoints).

Every image of a run that reaches "host/team/app" gets the same object, so what the run learns about a
location (a layout's created state, the stores the blob mover records as holding a blob) is shared and a
location string is turned into a store once. "Store" means ImageStore only; the ledger side is LedgerFiles.
"""

from __future__ import annotations

from pathlib import Path

from gcrsync.engine.plan import PlanItem
from gcrsync.registry.client import RegistryClient
from gcrsync.store import ImageStore


class Endpoints:
    """Opens and caches the ImageStore for "host/path" or "oci:/dir/path" locations."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._opened: dict[str, ImageStore] = {}

    def open(self, location: str) -> ImageStore:
        found = self._opened.get(location)
        if found is None:
            if location.startswith("oci:"):
                from gcrsync.layout import LayoutRepository  # only OCI-layout targets need it (start-up)

                found = LayoutRepository(Path(location[4:]), create=True)
            else:
                host, _, repo = location.partition("/")
                found = self.client.repository(host, repo)
            self._opened[location] = found
        return found

    def source(self, item: PlanItem) -> ImageStore:
        return self.open(f"{item.spec.registry}/{item.source_repo}")

    def target(self, item: PlanItem) -> ImageStore:
        return self.open(item.target_repo)
