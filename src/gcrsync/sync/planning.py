"""Discover each namespace at its source and plan the run: what is new, changed, unchanged or removed.

The engine plans one namespace's listing (engine.plan); this adds what needs the run's context: listing
every namespace at once, a failed listing as that namespace's error (never "no images"), ledger entries
whose source tag is gone (removed upstream), and the ledger as the record of what the target holds.
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
    plan = Plan()
    namespaces: list[NamespaceResult] = []
    listings = await asyncio.gather(*(discover_namespace(client, s, options) for s in sources),
                                    return_exceptions=True)
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
        removed = removed_items(spec, listing, ledger) if ledger is not None else []
        if ledger is not None:
            removed = guard_removals(ns, listing, ledger, removed, options.max_removed)
        if ns.error is None:  # a namespace the guard took as vanished plans nothing, like a failed listing
            plan.items.extend(build_items(spec, listing))
            plan.items.extend(removed)
    check_collisions(plan.items)

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
