"""A whole namespace sync, end to end: discover → plan → copy → ledger → CHANGELOG → git.

This is the library entry point the `sync`, `compare` and `monitor` commands share. The ledger is written
after every finished image (atomically), so a run killed at any moment leaves a ledger that lists only
images whose target manifest push succeeded; the next run completes the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gcrsync.engine.blobcache import BlobLocations
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import ImageResult, error_text
from gcrsync.engine.plan import Plan, PlanItem, SourceSpec, build_items, check_collisions, resolve_digests
from gcrsync.engine.run import RunOutcome, execute
from gcrsync.errors import GcrsyncError
from gcrsync.layout import LayoutRepository
from gcrsync.ledger import Added, Failed, Ledger, MetadataRepo, Removed, RunChanges, Updated
from gcrsync.registry.client import RegistryClient, Repository
from gcrsync.registry.discovery import DiscoveredRepo
from gcrsync.store import ImageStore

log = logging.getLogger("gcrsync.sync")


@dataclass
class SyncOptions:
    jobs: int = 4
    query_jobs: int = 8
    trust_ledger: bool = False
    dry_run: bool = False
    blob_locations: BlobLocations | None = None  # cross-run mount hints (the CLI passes the user's cache)
    prune: bool = False  # delete target tags whose source tag is gone (registry targets only)
    image_deadline: float | None = None
    hub_api: str = "https://hub.docker.com"
    quay_api: str = "https://quay.io"


@dataclass
class NamespaceResult:
    spec: SourceSpec
    error: str | None = None  # discovery failed: nothing of this namespace was planned


@dataclass
class SyncReport:
    plan: Plan
    namespaces: list[NamespaceResult]
    outcome: RunOutcome = field(default_factory=RunOutcome)
    changes: RunChanges = field(default_factory=RunChanges)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    requests: int = 0
    retries: int = 0
    bytes_pulled: int = 0
    commit: str | None = None
    metadata_error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.outcome.failed
            and not any(n.error for n in self.namespaces)
            and not self.plan.by_state("error")
            and self.metadata_error is None
        )

    def to_json(self) -> dict[str, Any]:
        results = {id(item): res for item, res in self.outcome.results}
        images = []
        for item in self.plan.items:
            res = results.get(id(item))
            images.append({
                "source": item.source,
                "target": item.target,
                "state": res.state if res else item.state,
                "planned": item.state,
                "source_digest": item.source_digest,
                "digest": (res.digest if res and res.digest else item.target_digest),
                "previous_digest": item.target_digest if item.state == "changed" else None,
                "bytes": res.bytes_copied if res else 0,
                "blobs_copied": res.blobs_copied if res else 0,
                "blobs_mounted": res.blobs_mounted if res else 0,
                "blobs_skipped": res.blobs_skipped if res else 0,
                "error": (res.error if res else item.error),
            })
        states: dict[str, int] = {}
        for img in images:
            states[str(img["state"])] = states.get(str(img["state"]), 0) + 1
        return {
            "started": self.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_seconds": round(self.duration, 3),
            "namespaces": [{"source": n.spec.label, "target": n.spec.target_prefix, "error": n.error}
                           for n in self.namespaces],
            "images": images,
            "totals": {
                "images": len(images),
                "states": states,
                "bytes_copied": sum(int(i["bytes"] or 0) for i in images),
                "bytes_pulled": self.bytes_pulled,
                "requests": self.requests,
                "retries": self.retries,
            },
            "commit": self.commit,
            "metadata_error": self.metadata_error,
        }


class Mirror:
    """Runs syncs for a set of sources with one registry client and (optionally) one metadata repo."""

    def __init__(self, client: RegistryClient, sources: list[SourceSpec], options: SyncOptions,
                 metadata: MetadataRepo | None = None) -> None:
        self.client = client
        self.sources = sources
        self.options = options
        self.metadata = metadata
        self._stores: dict[str, ImageStore] = {}

    # -- stores -----------------------------------------------------------------------------------
    def store(self, location: str) -> ImageStore:
        """An ImageStore for "host/path" or "oci:/dir/path", cached so blob bookkeeping is shared."""
        found = self._stores.get(location)
        if found is None:
            if location.startswith("oci:"):
                found = LayoutRepository(Path(location[4:]), create=True)
            else:
                host, _, repo = location.partition("/")
                found = self.client.repository(host, repo)
            self._stores[location] = found
        return found

    def source_store(self, item: PlanItem) -> ImageStore:
        return self.store(f"{item.spec.registry}/{item.source_repo}")

    def target_store(self, item: PlanItem) -> ImageStore:
        return self.store(item.target_repo)

    # -- discovery and plan -----------------------------------------------------------------------
    async def discover(self, spec: SourceSpec) -> list[DiscoveredRepo]:
        return await self.client.list_namespace(
            spec.registry, spec.namespace, spec.discovery, repositories=spec.repositories or None,
            query_jobs=self.options.query_jobs, hub_api=self.options.hub_api, quay_api=self.options.quay_api,
        )

    def ledger(self, spec: SourceSpec) -> Ledger | None:
        if self.metadata is None:
            return None
        return self.metadata.store.load(spec.label, spec.target_prefix)

    async def plan(self, ledgers: dict[str, Ledger]) -> tuple[Plan, list[NamespaceResult]]:
        plan = Plan()
        namespaces: list[NamespaceResult] = []
        listings = await asyncio.gather(*(self.discover(s) for s in self.sources), return_exceptions=True)
        for spec, listing in zip(self.sources, listings, strict=True):
            if isinstance(listing, BaseException):
                if not isinstance(listing, Exception):
                    raise listing
                # A failed listing is an error for that namespace, never "no images".
                namespaces.append(NamespaceResult(spec, error_text(listing)))
                log.error("listing %s failed: %s", spec.label, error_text(listing))
                continue
            namespaces.append(NamespaceResult(spec))
            plan.items.extend(build_items(spec, listing))
            ledger = ledgers.get(spec.label)
            if ledger is not None:
                plan.items.extend(_removed_items(spec, listing, ledger))
        check_collisions(plan.items)

        def lookup(item: PlanItem) -> tuple[str, str | None] | None:
            ledger = ledgers.get(item.spec.label)
            entry = ledger.get(item.rel, item.tag) if ledger else None
            if entry is None or entry.digest is None:
                return None
            return entry.digest, entry.effective_source_digest

        await resolve_digests(
            [i for i in plan.items if i.state != "removed"],
            open_source=self.source_store,
            open_target=self.target_store,
            ledger_lookup=lookup,
            trust_ledger=self.options.trust_ledger,
            query_jobs=self.options.query_jobs,
        )
        return plan, namespaces

    # -- the run ----------------------------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event | None = None,
                  on_bytes: Callable[[int], None] | None = None,
                  on_image: Callable[[PlanItem, ImageResult], None] | None = None,
                  on_plan: Callable[[Plan], None] | None = None) -> SyncReport:
        started = time.monotonic()
        stats = self.client.transport.stats
        requests_before, retries_before = stats.total_requests, stats.retries
        ledgers: dict[str, Ledger] = {}
        for spec in self.sources:
            ledger = self.ledger(spec)
            if ledger is not None:
                ledgers[spec.label] = ledger
        plan, namespaces = await self.plan(ledgers)
        report = SyncReport(plan=plan, namespaces=namespaces)
        if on_plan is not None:
            on_plan(plan)
        if not self.options.dry_run:
            mover = BlobMover(self.options.jobs, on_bytes=on_bytes, locations=self.options.blob_locations)
            changes = report.changes

            async def record(item: PlanItem, result: ImageResult) -> None:
                if on_image is not None:
                    on_image(item, result)
                if result.state == "failed":
                    changes.failed.append(Failed(item.source, item.target, result.error or "unknown error"))
                    return
                if result.state == "skipped":  # a single-platform image of an unwanted platform
                    return
                ledger = ledgers.get(item.spec.label)
                if ledger is not None and self.metadata is not None:
                    ledger.record(item.rel, item.tag, digest=result.digest, target_ref=item.target,
                                  media_type=result.media_type or None, now=datetime.now(UTC),
                                  source_digest=result.source_digest or None,
                                  platforms=result.platforms or None)
                    saver.changed(ledger)
                if item.state == "changed" and result.state == "copied":
                    changes.updated.append(Updated(item.source, item.target, item.target_digest, result.digest))
                elif item.state == "new" and result.state == "copied":
                    changes.added.append(Added(item.source, item.target, result.digest))

            saver = _LedgerSaver(self.metadata)
            report.outcome = await execute(
                plan.work, open_source=self.source_store, open_target=self.target_store, mover=mover,
                jobs=self.options.jobs, on_result=record, stop=stop, image_deadline=self.options.image_deadline,
            )
            saver.flush()
            self._record_untouched(plan, ledgers)
            await self._prune(plan, ledgers)
            self._record_removed(plan, ledgers, changes)
            for item in plan.by_state("error"):
                changes.failed.append(Failed(item.source, item.target, item.error or "planning failed"))
            for ns in namespaces:
                if ns.error:
                    changes.failed.append(Failed(ns.spec.label, ns.spec.target_prefix, f"listing failed: {ns.error}"))
            report.bytes_pulled = mover.bytes_pulled
        report.requests = stats.total_requests - requests_before
        report.retries = stats.retries - retries_before
        report.duration = time.monotonic() - started
        return report

    def _record_untouched(self, plan: Plan, ledgers: dict[str, Ledger]) -> None:
        """Tags already correct at the target but missing from the ledger (first run with a fresh ledger,
        or a bootstrap) are recorded too, so the ledger tells what the target really holds."""
        if self.metadata is None:
            return
        dirty: set[str] = set()
        for item in plan.by_state("unchanged"):
            ledger = ledgers.get(item.spec.label)
            if ledger is None or item.target_digest is None:
                continue
            entry = ledger.get(item.rel, item.tag)
            if entry is None or entry.digest is None:
                ledger.record(item.rel, item.tag, digest=item.target_digest, target_ref=item.target,
                              media_type=None, now=datetime.now(UTC), source_digest=item.source_digest)
                dirty.add(item.spec.label)
        for label in dirty:
            self.metadata.store.save(ledgers[label])

    async def _prune(self, plan: Plan, ledgers: dict[str, Ledger]) -> None:
        """With prune: delete removed-upstream tags at the target, unless another tag we mirror into the
        same repository still points at that digest (a registry deletes manifests, not tags)."""
        if not self.options.prune:
            return
        for item in plan.by_state("removed"):
            store = self.target_store(item)
            if item.target_digest is None or not isinstance(store, Repository):
                continue
            ledger = ledgers.get(item.spec.label)
            still_used = ledger is not None and any(
                entry.digest == item.target_digest and entry.target.rsplit(":", 1)[0] == item.target_repo
                and (rel, tag) != (item.rel, item.tag)
                for rel, tag, entry in ledger.entries()
            )
            if still_used:
                log.info("not deleting %s: another mirrored tag points at %s", item.target, item.target_digest)
                continue
            try:
                await store.delete_manifest(item.target_digest)
                log.info("pruned %s (%s)", item.target, item.target_digest[:19])
            except GcrsyncError as exc:
                item.error = f"prune failed: {exc}"
                log.error("prune %s failed: %s", item.target, exc)

    def _record_removed(self, plan: Plan, ledgers: dict[str, Ledger], changes: RunChanges) -> None:
        if self.metadata is None:
            return
        dirty: set[str] = set()
        for item in plan.by_state("removed"):
            ledger = ledgers.get(item.spec.label)
            if ledger is not None and ledger.remove(item.rel, item.tag):
                changes.removed.append(Removed(item.source, item.target))
                dirty.add(item.spec.label)
        for label in dirty:
            self.metadata.store.save(ledgers[label])


class _LedgerSaver:
    """Writes a ledger soon after each finished image: at once, unless it was written less than a second
    ago (then at the next image or at the end). Rewriting a 10,000-tag ledger after every one of 10,000
    images would be quadratic; what a crash can lose is about a second of records, which the next plan
    finds at the target (HEAD) and records again. A ledger never lists an image whose push did not finish.
    """

    INTERVAL = 1.0

    def __init__(self, metadata: MetadataRepo | None) -> None:
        self.metadata = metadata
        self.pending: dict[str, Ledger] = {}
        self.last: dict[str, float] = {}

    def changed(self, ledger: Ledger) -> None:
        if self.metadata is None:
            return
        now = time.monotonic()
        if now - self.last.get(ledger.source, 0.0) >= self.INTERVAL:
            self.metadata.store.save(ledger)
            self.last[ledger.source] = now
            self.pending.pop(ledger.source, None)
        elif ledger.source not in self.pending:
            self.pending[ledger.source] = ledger
            # Written within the interval even if no other image finishes meanwhile (a long copy).
            asyncio.get_running_loop().call_later(self.INTERVAL, self._flush_one, ledger.source)

    def _flush_one(self, source: str) -> None:
        ledger = self.pending.pop(source, None)
        if ledger is not None and self.metadata is not None:
            self.metadata.store.save(ledger)
            self.last[source] = time.monotonic()

    def flush(self) -> None:
        if self.metadata is not None:
            for ledger in self.pending.values():
                self.metadata.store.save(ledger)
        self.pending.clear()


def _removed_items(spec: SourceSpec, listing: list[DiscoveredRepo], ledger: Ledger) -> list[PlanItem]:
    """Ledger entries whose tag no longer exists at the source at all (not merely filtered out)."""
    from gcrsync.engine.plan import relative_path, target_location

    present = {(relative_path(spec.namespace, r.repository), t) for r in listing for t in r.tags}
    out = []
    for rel, tag, entry in ledger.entries():
        if (rel, tag) not in present:
            source_repo = f"{spec.namespace}/{rel}" if spec.namespace else rel
            target_repo = entry.target.rsplit(":", 1)[0] if entry.target else target_location(spec, source_repo)
            out.append(PlanItem(spec, source_repo, rel, tag, target_repo, state="removed",
                                target_digest=entry.digest))
    return out
