"""A whole sync, end to end: plan → run → record → prune → report (Mirror).

This is the library entry point the `sync`, `compare`, `monitor` and `list` commands share. Each step
lives in its own module; this one only puts them in order and feeds the Recorder what happened, so the
ledger rules (sync.recorder) and the prune rules (sync.prune) each have exactly one home.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.plan import Plan, PlanItem, SourceSpec
from gcrsync.engine.result import Attached, ImageResult
from gcrsync.engine.run import check_attached, execute
from gcrsync.ledger import Ledger, MetadataRepo
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.discovery import DiscoveredRepo
from gcrsync.sync.endpoints import Endpoints
from gcrsync.sync.journal import ChangeJournal
from gcrsync.sync.options import SyncOptions
from gcrsync.sync.planning import discover_namespace, make_plan
from gcrsync.sync.prune import prune
from gcrsync.sync.recorder import (
    AlreadyThere,
    ArtifactsChecked,
    ImageDone,
    NotListed,
    NotPlanned,
    PruneFailed,
    Recorder,
    RemovedUpstream,
)
from gcrsync.sync.report import NamespaceResult, SyncReport
from gcrsync.sync.shard import plan_peers


class Mirror:
    """Runs syncs for a set of sources with one registry client and (optionally) one metadata repo."""

    def __init__(self, client: RegistryClient, sources: list[SourceSpec], options: SyncOptions,
                 metadata: MetadataRepo | None = None, journal: ChangeJournal | None = None) -> None:
        self.client = client
        self.sources = sources
        self.options = options
        self.metadata = metadata
        self.endpoints = Endpoints(client)
        # Changes recorded but not yet published, surviving a killed run (sync.journal): whoever publishes
        # the run's changes clears it afterwards (the CLI does).
        self.journal = journal

    async def discover(self, spec: SourceSpec) -> list[DiscoveredRepo]:
        return await discover_namespace(self.client, spec, self.options)

    def ledger(self, spec: SourceSpec) -> Ledger | None:
        if self.metadata is None:
            return None
        return self.metadata.ledgers.load(spec.label, spec.target_prefix)

    async def plan(self, ledgers: dict[str, Ledger]) -> tuple[Plan, list[NamespaceResult]]:
        return await make_plan(self.client, self.endpoints, self.sources, self.options, ledgers)

    @staticmethod
    def _prunable(removed: list[PlanItem], report: SyncReport, stop: asyncio.Event | None) -> list[PlanItem]:
        """The removed items a prune may act on; the others get the reason as their error (so the ledger
        keeps them, the next run tries again, and the exit is non-zero).

        Nothing after a stop request (the run is to end, and what it learned may be cut short), and nothing
        of a namespace where an image failed or a tag could not be planned (its target is not in the state
        the plan assumed, or its listing is in doubt).
        """
        failed = {item.spec.label for item, _ in report.outcome.failed}
        failed |= {item.spec.label for item in report.plan.by_state("error")}  # unplanned tags count too
        out = []
        for item in removed:
            if stop is not None and stop.is_set():
                item.error = "not pruned: the run was interrupted"
            elif item.spec.label in failed:
                item.error = "not pruned: an image or tag of this namespace failed in this run"
            else:
                out.append(item)
        return out

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
        report = SyncReport(plan=plan, namespaces=namespaces, shard=self.options.shard)
        if on_plan is not None:
            on_plan(plan)
        if not self.options.dry_run:
            mover = BlobMover(self.options.jobs, on_bytes=on_bytes, locations=self.options.blob_locations,
                              peers=plan_peers(plan))  # a shard mounts from where other shards copy (sync.shard)
            files = self.metadata.ledgers if self.metadata is not None else None
            if self.journal is not None:
                left = self.journal.load()  # an earlier run's, killed before it published them
                for kind in ("added", "updated", "removed"):
                    getattr(report.changes, kind).extend(getattr(left, kind))
            async with Recorder(ledgers, files, report.changes, self.journal) as recorder:

                async def image_done(item: PlanItem, result: ImageResult) -> None:
                    if on_image is not None:
                        on_image(item, result)
                    recorder.record(ImageDone(item, result))

                report.outcome = await execute(
                    plan.work, open_source=self.endpoints.source, open_target=self.endpoints.target,
                    mover=mover, jobs=self.options.jobs, on_result=image_done, stop=stop,
                    image_deadline=self.options.image_deadline, stop_grace=self.options.stop_grace,
                )
                for item in plan.by_state("unchanged"):
                    recorder.record(AlreadyThere(item))

                async def attached_done(item: PlanItem, found: list[Attached], error: str | None) -> None:
                    if found or error:  # most tags have nothing attached: no entry per tag in the report
                        report.attached[id(item)] = (found, error)
                    recorder.record(ArtifactsChecked(item, found, error))

                await check_attached(
                    plan.by_state("unchanged"), open_source=self.endpoints.source, open_target=self.endpoints.target,
                    mover=mover, jobs=self.options.jobs, subjects=lambda item: _subjects(item, ledgers),
                    on_done=attached_done, stop=stop,
                )
                removed = plan.by_state("removed")
                if self.options.prune:
                    await prune(self._prunable(removed, report, stop), self.endpoints, ledgers)
                for item in removed:
                    recorder.record(PruneFailed(item, item.error) if item.error else RemovedUpstream(item))
                for item in plan.by_state("error"):
                    recorder.record(NotPlanned(item))
                for ns in namespaces:
                    if ns.error:
                        recorder.record(NotListed(ns))
            report.bytes_pulled = mover.bytes_pulled
            report.pulled_blobs = dict(mover.pulled_bytes)  # shards' reports are compared for duplicates
            report.peer_mounts = mover.peer_mounts
        report.interrupted = stop is not None and stop.is_set()
        report.requests = stats.total_requests - requests_before
        report.retries = stats.retries - retries_before
        report.duration = time.monotonic() - started
        return report


def _subjects(item: PlanItem, ledgers: dict[str, Ledger]) -> list[str]:
    """Where to look for new artifacts of a tag already mirrored, without fetching its manifest: the tagged
    digest (unless a platform subset gave the target another one) and the index children the ledger knows
    artifacts on. Artifacts found are looked into in turn (artifacts of artifacts)."""
    out = [item.source_digest] if item.source_digest and not item.spec.platforms else []
    ledger = ledgers.get(item.spec.label)
    entry = ledger.get(item.rel, item.tag) if ledger is not None else None
    if entry is not None:
        artifacts = {a.digest for a in entry.artifacts}
        out += sorted({a.subject for a in entry.artifacts} - artifacts - set(out))
    return out
