"""Execute a plan: copy the new and changed tags concurrently, report each image as soon as it is done.

One failed image never stops the others. A stop event (SIGTERM) lets images in flight finish and starts
no new ones, so the ledger written afterwards is complete for what was done; images still in flight
`stop_grace` seconds after the stop request are cancelled and reported pending with the unstarted ones
(a stalled source must not keep a stopping process alive: orchestrators kill it soon after).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gcrsync.engine.artifacts import attach
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import CopyOptions, PlatformMismatch, copy_image
from gcrsync.engine.plan import PlanItem
from gcrsync.engine.result import Attached, ImageResult
from gcrsync.errors import GcrsyncError, error_text
from gcrsync.oci import Platform
from gcrsync.store import ImageStore

log = logging.getLogger("gcrsync.run")

OnResult = Callable[[PlanItem, ImageResult], Awaitable[None]]


@dataclass
class RunOutcome:
    results: list[tuple[PlanItem, ImageResult]] = field(default_factory=list)
    skipped: list[PlanItem] = field(default_factory=list)  # not done because of a stop request
    duration: float = 0.0

    @property
    def failed(self) -> list[tuple[PlanItem, ImageResult]]:
        return [(i, r) for i, r in self.results if r.state == "failed"]


async def execute(
    items: list[PlanItem],
    *,
    open_source: Callable[[PlanItem], ImageStore],
    open_target: Callable[[PlanItem], ImageStore],
    mover: BlobMover,
    jobs: int,
    on_result: OnResult | None = None,
    stop: asyncio.Event | None = None,
    image_deadline: float | None = None,
    stop_grace: float = 60.0,
) -> RunOutcome:
    outcome = RunOutcome()
    started = time.monotonic()
    gate = asyncio.Semaphore(max(1, jobs))
    in_flight: set[asyncio.Task[ImageResult]] = set()
    grace_over = asyncio.Event()

    async def end_grace() -> None:
        assert stop is not None
        await stop.wait()
        await asyncio.sleep(stop_grace)
        grace_over.set()
        for task in list(in_flight):
            task.cancel()

    async def one(item: PlanItem) -> None:
        async with gate:
            if stop is not None and stop.is_set():
                outcome.skipped.append(item)
                return
            known = _known_unwanted_platform(item, mover)
            if known is not None:  # seen before: skipped without a single request
                result = _failed(item, f"{item.source} is a single-platform {known} image")
                result.state = "skipped"
                outcome.results.append((item, result))
                if on_result is not None:
                    await on_result(item, result)
                return
            # The plan already HEADed the target; only a platform subset (new digest computed here) needs a look.
            sparse = frozenset({item.source_digest}) if item.sparse and item.source_digest else frozenset()
            options = CopyOptions(platforms=item.spec.platforms, check_target=bool(item.spec.platforms), sparse=sparse)
            task = asyncio.ensure_future(
                copy_image(open_source(item), item.tag, open_target(item), item.tag, mover, options))
            in_flight.add(task)
            try:
                result = await asyncio.wait_for(task, image_deadline) if image_deadline else await task
            except asyncio.CancelledError:
                if not grace_over.is_set():
                    raise
                log.warning("gave up on %s → %s: still in flight %.0fs after the stop request",
                            item.source, item.target, stop_grace)
                outcome.skipped.append(item)
                return
            except TimeoutError:
                result = _failed(item, f"image not done within its {image_deadline:.0f}s deadline")
            except PlatformMismatch as exc:  # not wanted, not a failure: reported as skipped
                result = _failed(item, str(exc))
                result.state = "skipped"
            except Exception as exc:  # includes ExceptionGroups from the graph copy
                result = _failed(item, error_text(exc))
            finally:
                in_flight.discard(task)
            if result.state in ("copied", "unchanged") and item.spec.artifacts.enabled:
                result.artifacts, result.artifacts_error = await attach(
                    open_source(item), open_target(item), result.subjects, mover, item.spec.artifacts,
                    item.attached_tags)
            if result.state == "failed":
                log.error("failed %s → %s: %s", item.source, item.target, result.error)
            else:
                log.info("%s %s → %s %s", result.state, item.source, item.target, result.digest[:19])
                if result.sparse_children_missing:
                    log.warning("%s is a sparse index: %d of its children are absent at the source and were not "
                                "copied", item.source, result.sparse_children_missing)
            outcome.results.append((item, result))
            if on_result is not None:
                await on_result(item, result)

    watcher = asyncio.create_task(end_grace()) if stop is not None else None
    try:
        await asyncio.gather(*(one(i) for i in items))
    finally:
        if watcher is not None:
            watcher.cancel()
    outcome.duration = time.monotonic() - started
    return outcome


AttachedDone = Callable[[PlanItem, list[Attached], str | None], Awaitable[None]]


async def check_attached(
    items: list[PlanItem],
    *,
    open_source: Callable[[PlanItem], ImageStore],
    open_target: Callable[[PlanItem], ImageStore],
    mover: BlobMover,
    jobs: int,
    subjects: Callable[[PlanItem], list[str]],
    on_done: AttachedDone,
    stop: asyncio.Event | None = None,
) -> None:
    """For tags already mirrored: pick up artifacts attached at the source since (a new signature).

    `subjects` names the digests to look at per item (the tagged manifest, and the index children the
    ledger knows artifacts on). When the tagged manifest is an index that just got an artifact, its other
    children are looked at too: `cosign sign --recursive` signs an index and every child at once. A child
    signed later on its own is found when the image is next copied.
    """
    todo = iter([i for i in items if i.spec.artifacts.enabled])

    # `jobs` workers take the items in turn, not a coroutine per tag (a no-op of 50,000 tags checks them all).
    async def worker() -> None:
        for item in todo:
            if stop is not None and stop.is_set():
                return
            src, dst, looked = open_source(item), open_target(item), subjects(item)
            found, error = await attach(src, dst, looked, mover, item.spec.artifacts, item.attached_tags)
            if error is None and any(a.copied and a.subject == item.source_digest for a in found):
                more, error = await _children_too(src, dst, item, looked, mover)
                found += more
            if error:
                log.error("%s: %s", item.source, error)
            await on_done(item, found, error)

    await asyncio.gather(*(worker() for _ in range(max(1, jobs))))


async def _children_too(src: ImageStore, dst: ImageStore, item: PlanItem, looked: list[str],
                        mover: BlobMover) -> tuple[list[Attached], str | None]:
    """What is attached to the children of the tagged index that were not looked at (one manifest GET)."""
    try:
        manifest = await src.get_manifest(item.source_digest or "")
    except GcrsyncError as exc:
        return [], f"attached artifacts: {error_text(exc)}"
    children = [c.digest for c in manifest.children if c.digest not in looked]
    if not children:
        return [], None
    return await attach(src, dst, children, mover, item.spec.artifacts, item.attached_tags)


def _known_unwanted_platform(item: PlanItem, mover: BlobMover) -> str | None:
    """The remembered platform of the source digest, if it is a single-platform image nobody asked for."""
    if not item.spec.platforms or mover.locations is None or item.source_digest is None:
        return None
    known = mover.locations.platform(item.source_digest)
    if known is None:
        return None
    try:
        platform = Platform.parse(known)
    except GcrsyncError:
        return None
    return None if any(p.matches(platform) for p in item.spec.platforms) else known


def _failed(item: PlanItem, reason: str) -> ImageResult:
    return ImageResult(source=item.source, target=item.target, state="failed", error=reason,
                       source_digest=item.source_digest or "")
