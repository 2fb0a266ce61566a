"""Prune: take away target tags whose source tag is gone, where the target can do that.

Whether a target can is its capability (gcrsync.store.RemovesTags), never its class: a registry deletes
the manifest, an OCI layout drops the index entry and what only it kept alive. A target without the
capability gets a per-item error and a failing run, never a silent skip, since `--prune` was asked for.
"""

from __future__ import annotations

import logging

from gcrsync.engine.plan import PlanItem
from gcrsync.errors import GcrsyncError
from gcrsync.ledger import Ledger
from gcrsync.store import RemovesTags
from gcrsync.sync.endpoints import Endpoints

log = logging.getLogger("gcrsync.sync")


async def prune(items: list[PlanItem], endpoints: Endpoints, ledgers: dict[str, Ledger]) -> None:
    """Remove each removed-upstream item's target tag; a failure or refusal is set as the item's error.

    A tag is kept when another tag we mirror into the same target repository points at the same digest:
    a registry deletes manifests, not tags, so removing one would take the other with it.
    """
    for item in items:
        if item.target_digest is None:
            continue  # a migrated legacy entry: what the target holds under it was never known
        if _still_used(item, ledgers.get(item.spec.label)):
            log.info("not deleting %s: another mirrored tag points at %s", item.target, item.target_digest)
            continue
        store = endpoints.target(item)
        if not isinstance(store, RemovesTags):
            item.error = f"prune is not supported for {store.name}"
            log.error("%s: %s", item.target, item.error)
            continue
        try:
            removed = await store.remove_tag(item.tag, item.target_digest)
        except GcrsyncError as exc:
            item.error = f"prune failed: {exc}"
            log.error("prune %s failed: %s", item.target, exc)
            continue
        if removed:
            log.info("pruned %s (%s)", item.target, item.target_digest[:19])
        else:
            log.info("not pruned %s: it was no longer there at %s", item.target, item.target_digest[:19])


def _still_used(item: PlanItem, ledger: Ledger | None) -> bool:
    return ledger is not None and any(
        entry.digest == item.target_digest and entry.target.rsplit(":", 1)[0] == item.target_repo
        and (rel, tag) != (item.rel, item.tag)
        for rel, tag, entry in ledger.entries()
    )
