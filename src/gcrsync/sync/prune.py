"""Prune: take away target tags whose source tag is gone, where the target can do that, breaking nothing.

Whether a target can is its capability (gcrsync.store.RemovesTags), never its class: a registry deletes
the manifest, an OCI layout drops the index entry and what only it kept alive. A target without the
capability gets a per-item error and a failing run, never a silent skip, since `--prune` was asked for.

A registry deletes manifests, not tags, so before deleting anything in a target repository we collect every
manifest that what stays there still reaches: each remaining tag (the target's own tag list, plus every tag
any namespace of this run records there), its children when it is an index, and the subject of a referrer.
A removed tag whose digest is among them is not deleted (e.g. `v1-amd64` gone upstream while the mirrored
index `v1` still lists it). When that set cannot be learned, nothing in that repository is deleted.
Right before deleting, the tag's current digest is checked: someone may have re-pointed it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from gcrsync.engine.plan import PlanItem
from gcrsync.errors import GcrsyncError, error_text
from gcrsync.ledger import Ledger
from gcrsync.store import ImageStore, ListsTags, RemovesTags
from gcrsync.sync.endpoints import Endpoints

log = logging.getLogger("gcrsync.sync")


async def prune(items: list[PlanItem], endpoints: Endpoints, ledgers: dict[str, Ledger]) -> None:
    """Remove each removed-upstream item's target tag; a failure or refusal is set as the item's error."""
    by_repo: dict[str, list[PlanItem]] = defaultdict(list)
    for item in items:
        if item.target_digest is not None:  # a migrated legacy entry: what the target holds was never known
            by_repo[item.target_repo].append(item)
    for target_repo, repo_items in by_repo.items():
        store = endpoints.open(target_repo)
        if not isinstance(store, RemovesTags):
            for item in repo_items:
                item.error = f"prune is not supported for {store.name}"
                log.error("%s: %s", item.target, item.error)
            continue
        try:
            used = await _still_reached(store, target_repo, {i.tag for i in repo_items}, ledgers)
        except Exception as exc:  # any failure: what stays is unknown, so nothing here may go
            for item in repo_items:
                item.error = f"prune failed: cannot tell what still uses it: {error_text(exc)}"
                log.error("not pruning %s: %s", item.target, item.error)
            continue
        for item in repo_items:
            await _prune_one(store, item, used)


async def _prune_one(store: ImageStore, item: PlanItem, used: set[str]) -> None:
    assert isinstance(store, RemovesTags)
    assert item.target_digest is not None
    if item.target_digest in used:
        log.info("not deleting %s: a mirrored tag still reaches %s", item.target, item.target_digest)
        return
    try:
        desc = await store.head_manifest(item.tag)
        now = desc.digest if desc else None
        if now != item.target_digest:
            # Gone already, or re-pointed by someone else: either way not the manifest we mirrored there.
            log.info("not pruning %s: it now holds %s, not %s", item.target, now or "nothing", item.target_digest)
            return
        removed = await store.remove_tag(item.tag, item.target_digest)
    except GcrsyncError as exc:
        item.error = f"prune failed: {exc}"
        log.error("prune %s failed: %s", item.target, exc)
        return
    if removed:
        log.info("pruned %s (%s)", item.target, item.target_digest[:19])
    else:
        log.info("not pruned %s: it was no longer there at %s", item.target, item.target_digest[:19])


async def _still_reached(store: ImageStore, target_repo: str, removing: set[str],
                         ledgers: dict[str, Ledger]) -> set[str]:
    """Every manifest digest that a tag staying in `target_repo` reaches (see the module doc)."""
    staying: set[str] = set()
    if isinstance(store, ListsTags):
        staying.update(await store.list_tags())
    for ledger in ledgers.values():
        for _, tag, entry in ledger.entries():
            if entry.target.rsplit(":", 1)[0] == target_repo:
                staying.add(tag)
    staying -= removing
    reached: set[str] = set()
    todo: list[str] = sorted(staying)
    while todo:
        ref = todo.pop()
        if ref.startswith("sha256:") and ref in reached:
            continue
        if await store.head_manifest(ref) is None:
            continue  # a tag deleted meanwhile (or never pushed): reaches nothing
        manifest = await store.get_manifest(ref)
        reached.add(manifest.digest)
        todo.extend(c.digest for c in manifest.children if c.digest not in reached)
        if manifest.subject is not None:
            reached.add(manifest.subject.digest)
    return reached
