"""The removal guard: a namespace's removals are recorded (and pruned) only when its listing is believable.

A listing that suddenly lacks much of what we mirrored is far more often a broken or moved source (an empty
`_catalog`, a renamed project, a registry answering `[]`) than a real mass deletion; taking it at its word
would empty the ledger and, with --prune, the target. So, like rsync's and rclone's `--max-delete`, each
namespace is checked against its ledger before anything is recorded or pruned:

- its listing is empty while its ledger is not: a failed listing (the namespace's error), nothing removed;
- a ledger repository is missing from the listing while others remain: its tags are errors and stay;
- more removals than `max_removed` allows (default 25%, and never all): every removal of it is held.

`max_removed: 100%` accepts all three (the source really did delete that much).
"""

from __future__ import annotations

import logging

from gcrsync.config import MaxRemoved
from gcrsync.engine.plan import PlanItem, relative_path
from gcrsync.ledger import Ledger
from gcrsync.registry.discovery import DiscoveredRepo
from gcrsync.sync.report import NamespaceResult

log = logging.getLogger("gcrsync.sync")

OVERRIDE = "--max-removed (a count, N% or 100%) or max_removed in the config"


def guard_removals(ns: NamespaceResult, listing: list[DiscoveredRepo], ledger: Ledger, removed: list[PlanItem],
                   limit: MaxRemoved, *, total: int | None = None) -> list[PlanItem]:
    """The removed-upstream items to plan for this namespace, with the guard applied (see module doc).

    Sets `ns.error` for a vanished namespace and `ns.guard` when the limit holds the removals back. A shard
    passes only its own removals and, as `total`, its own share of the ledger: `max_removed` then holds per
    shard, while the empty-listing and vanished-repository checks still look at the whole listing.
    """
    if total is None:
        total = sum(1 for _ in ledger.entries())
    if not removed or limit.everything:
        return removed
    label = ns.spec.label
    listed = {relative_path(ns.spec.namespace, r.repository) for r in listing if r.tags}
    if not listed:
        ns.error = (f"{label} lists no images, but its ledger holds {total}: taken as a failed listing, "
                    f"nothing removed (if the namespace really is gone: {OVERRIDE})")
        log.error("%s", ns.error)
        return []
    kept: list[PlanItem] = []
    for item in removed:
        if item.rel not in listed:
            item.state = "error"
            item.error = (f"repository {item.rel} vanished from the listing of {label}: kept, not removed "
                          f"(if it really is gone: {OVERRIDE})")
        else:
            kept.append(item)
    vanished = {i.rel for i in removed if i.state == "error"}
    for rel in sorted(vanished):
        log.error("repository %s vanished from the listing of %s: its ledger entries are kept", rel, label)
    if kept and not limit.allows(len(kept), total):
        ns.guard = (f"removal guard: {label} would record {len(kept)} of its {total} ledger entries as removed "
                    f"upstream (limit {limit.text}{', and never all' if len(kept) >= total else ''}): nothing "
                    f"of it recorded as removed or pruned; to accept, raise {OVERRIDE}")
        log.error("%s", ns.guard)
        for item in kept:
            item.state = "held"
    return removed
