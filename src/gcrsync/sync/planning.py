"""Discover each namespace at its source and plan the run: what is new, changed, unchanged or removed.

The engine plans one namespace's listing (engine.plan); this adds what needs the run's context: listing
every namespace at once, a failed listing as that namespace's error (never "no images"), ledger entries
whose source tag is gone (removed upstream), and the ledger as the record of what the target holds.

With a shard (sync.shard), every namespace is still listed whole (all shards must compute the same split,
and name collisions are checked across the whole plan), but only the shard's own repositories are planned:
no HEAD, copy, removal or guard decision for another shard's repository.
"""

from __future__ import annotations

import asyncio
import logging

from gcrsync.engine.plan import (
    Plan,
    PlanItem,
    SourceSpec,
    build_items,
    check_collisions,
    relative_path,
    resolve_digests,
    target_location,
)
from gcrsync.errors import error_text
from gcrsync.ledger import Ledger
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.discovery import DiscoveredRepo
from gcrsync.sync.endpoints import Endpoints
from gcrsync.sync.guard import guard_removals
from gcrsync.sync.options import SyncOptions
from gcrsync.sync.report import NamespaceResult
from gcrsync.sync.shard import ShardedPlan, Split, peer_repositories, split_listings

log = logging.getLogger("gcrsync.sync")


async def discover_namespace(client: RegistryClient, spec: SourceSpec, options: SyncOptions) -> list[DiscoveredRepo]:
    """The repositories and tags under one source namespace."""
    return await client.list_namespace(
        spec.registry, spec.namespace, spec.discovery, repositories=spec.repositories or None,
        query_jobs=options.query_jobs,
    )


async def make_plan(client: RegistryClient, endpoints: Endpoints, sources: list[SourceSpec], options: SyncOptions,
                    ledgers: dict[str, Ledger]) -> tuple[Plan, list[NamespaceResult]]:
    """List every namespace, then decide each tag's state with HEADs (or the ledger, when trusted)."""
    namespaces: list[NamespaceResult] = []
    listings = await asyncio.gather(*(discover_namespace(client, s, options) for s in sources),
                                    return_exceptions=True)
    listed = [(spec, listing) for spec, listing in zip(sources, listings, strict=True)
              if not isinstance(listing, BaseException)]
    shard = options.shard
    split = split_listings(listed, shard.count) if shard is not None else None
    plan = Plan() if shard is None else ShardedPlan()
    everything: list[PlanItem] = []  # every shard's items: collisions are refused for the whole plan
    for spec, listing in zip(sources, listings, strict=True):
        if isinstance(listing, BaseException):
            if not isinstance(listing, Exception):
                raise listing
            # A failed listing is an error for that namespace, never "no images".
            namespaces.append(NamespaceResult(spec, error_text(listing)))
            log.error("listing %s failed: %s", spec.label, error_text(listing))
            continue
        ns = NamespaceResult(spec)
        namespaces.append(ns)
        ledger = ledgers.get(spec.label)
        items = build_items(spec, listing)
        everything.extend(items)
        removed = removed_items(spec, listing, ledger) if ledger is not None else []
        total = None
        if split is not None and shard is not None:
            items, removed = _own(split, shard.index, items), _own(split, shard.index, removed)
            # The removal guard's share is this shard's part of the ledger (sync.guard).
            total = sum(1 for rel, _, _ in ledger.entries() if split.owner(spec, rel) == shard.index) \
                if ledger is not None else None
        if ledger is not None:
            removed = guard_removals(ns, listing, ledger, removed, options.max_removed, total=total)
        if ns.error is None:  # a namespace the guard took as vanished plans nothing, like a failed listing
            plan.items.extend(items)
            plan.items.extend(removed)
    check_collisions(everything)
    if isinstance(plan, ShardedPlan) and split is not None and shard is not None:
        plan.peers = peer_repositories(everything, split, shard.index)

    def lookup(item: PlanItem) -> tuple[str, str | None] | None:
        ledger = ledgers.get(item.spec.label)
        entry = ledger.get(item.rel, item.tag) if ledger is not None else None  # not len(): O(repos)
        if entry is None or entry.digest is None:
            return None
        if entry.target != item.target:
            # Recorded for another target (a new --dest or naming): nothing is known about this one, so
            # neither trust_ledger nor `immutable` may skip the check that decides whether to copy.
            return None
        return entry.digest, entry.effective_source_digest

    await resolve_digests(
        [i for i in plan.items if i.state in ("new", "changed", "unchanged")],
        open_source=endpoints.source,
        open_target=endpoints.target,
        ledger_lookup=lookup,
        trust_ledger=options.trust_ledger,
        query_jobs=options.query_jobs,
        verify_target=lambda item: options.verifies(item.spec),
    )
    return plan, namespaces


def _own(split: Split, index: int, items: list[PlanItem]) -> list[PlanItem]:
    return [i for i in items if split.owner(i.spec, i.rel) == index]


def removed_items(spec: SourceSpec, listing: list[DiscoveredRepo], ledger: Ledger) -> list[PlanItem]:
    """Ledger entries whose tag no longer exists at the source at all (not merely filtered out)."""
    present = {(relative_path(spec.namespace, r.repository), t) for r in listing for t in r.tags}
    out = []
    for rel, tag, entry in ledger.entries():
        if (rel, tag) not in present:
            source_repo = f"{spec.namespace}/{rel}" if spec.namespace else rel
            target_repo = entry.target.rsplit(":", 1)[0] if entry.target else target_location(spec, source_repo)
            out.append(PlanItem(spec, source_repo, rel, tag, target_repo, state="removed",
                                target_digest=entry.digest))
    return out
