"""The one place a run's outcome is written down: ledger entries and the CHANGELOG's change lists.

Everything the run learns arrives as an event object (ImageDone, AlreadyThere, RemovedUpstream, ...), so
the orchestration says *what happened* and the Recorder alone decides what that means for the ledger and
when the ledger file is written.

Write policy: a changed ledger is written at once, unless it was written less than a second ago; then it
is written when that second is over (even if no other image finishes meanwhile, e.g. during a long copy),
and everything still unwritten is flushed when the run ends. Rewriting a 10,000-tag ledger after every one
of 10,000 images would be quadratic; what a crash can lose is about a second of records, which the next
plan finds at the target (HEAD) and records again. An image is recorded only once its target manifest
push finished, so a ledger never lists an image the target lacks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from gcrsync.engine.plan import PlanItem
from gcrsync.engine.result import Attached, ImageResult
from gcrsync.ledger import Added, Failed, Ledger, LedgerFiles, Removed, RunChanges, Updated
from gcrsync.ledger.changelog import Attached as AttachedChange
from gcrsync.sync.journal import ChangeJournal
from gcrsync.sync.report import NamespaceResult

log = logging.getLogger("gcrsync.sync")


@dataclass(frozen=True)
class ImageDone:
    """The engine finished an image: copied, failed, or skipped (a platform nobody asked for)."""

    item: PlanItem
    result: ImageResult


@dataclass(frozen=True)
class AlreadyThere:
    """The plan found the tag already correct at the target (no copy needed)."""

    item: PlanItem


@dataclass(frozen=True)
class RemovedUpstream:
    """The source tag is gone; the target tag was pruned, or left alone because prune is off."""

    item: PlanItem


@dataclass(frozen=True)
class PruneFailed:
    """The target tag of a removed-upstream tag should have been pruned and was not (it is still there)."""

    item: PlanItem
    reason: str


@dataclass(frozen=True)
class NotPlanned:
    """A tag whose state could not be decided (e.g. its HEAD failed): nothing was done with it."""

    item: PlanItem


@dataclass(frozen=True)
class NotListed:
    """A namespace whose listing failed: none of its tags were planned."""

    namespace: NamespaceResult


@dataclass(frozen=True)
class ArtifactsChecked:
    """What is attached to a tag that was already mirrored, after looking for new artifacts at the source."""

    item: PlanItem
    found: list[Attached]
    error: str | None


Event = ImageDone | AlreadyThere | RemovedUpstream | PruneFailed | NotPlanned | NotListed | ArtifactsChecked

_KIND_NAMES = {"sig": "signature", "att": "attestation", "sbom": "SBOM"}


def artifact_label(found: Attached) -> str:
    """signature / attestation / SBOM, else the artifactType (or the tag-schema suffix) as it is."""
    if found.kind != "referrer":
        return _KIND_NAMES.get(found.kind, found.kind)
    kind = found.artifact_type or "artifact"
    if "cosign.artifact.sig" in kind or "simplesigning" in kind:
        return "signature"
    if any(word in kind for word in ("in-toto", "dsse", "sigstore.bundle", "attestation")):
        return "attestation"
    if "spdx" in kind or "cyclonedx" in kind:
        return "SBOM"
    return kind


class Recorder:
    """Applies events to the run's ledgers and change lists; writes ledgers by the policy above.

    Use as `async with recorder:` around the part of the run that records; the ledgers are flushed on exit.
    Without `files` (no metadata repository) only the change lists are kept.
    """

    INTERVAL = 1.0  # seconds between two writes of the run's ledgers

    def __init__(self, ledgers: dict[str, Ledger], files: LedgerFiles | None, changes: RunChanges,
                 journal: ChangeJournal | None = None) -> None:
        self.ledgers = ledgers if files is not None else {}
        self.files = files
        self.changes = changes
        self.journal = journal  # each change is journaled before a ledger holding it is written
        self._dirty: dict[str, Ledger] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._writer = asyncio.create_task(self._write_loop(), name="gcrsync-ledger-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            # Unlike awaiting it, wait() never raises the writer's own error: that was logged when it
            # happened, and the final flush below writes (or fails on) everything still unwritten.
            await asyncio.wait([writer])
            if not writer.cancelled():
                writer.exception()  # marks it retrieved, so asyncio does not report it a second time
        self.flush()

    def record(self, event: Event) -> None:
        match event:
            case ImageDone(item, result):
                self._image_done(item, result)
            case AlreadyThere(item):
                self._already_there(item)
            case RemovedUpstream(item):
                ledger = self.ledgers.get(item.spec.label)
                if ledger is not None and ledger.remove(item.rel, item.tag):
                    self._note("removed", Removed(item.source, item.target))
                    self._changed(ledger)
            case PruneFailed(item, reason):
                # The ledger keeps the entry: the target still holds the tag, and the next run tries again.
                self.changes.failed.append(Failed(item.source, item.target, reason))
            case NotPlanned(item):
                self.changes.failed.append(Failed(item.source, item.target, item.error or "planning failed"))
            case NotListed(ns):
                self.changes.failed.append(Failed(ns.spec.label, ns.spec.target_prefix,
                                                  f"listing failed: {ns.error}"))
            case ArtifactsChecked(item, found, error):
                self._attachments(item, found, error)

    def _image_done(self, item: PlanItem, result: ImageResult) -> None:
        if result.state == "failed":
            self.changes.failed.append(Failed(item.source, item.target, result.error or "unknown error"))
            return
        if result.state == "skipped":  # a single-platform image of an unwanted platform
            return
        ledger = self.ledgers.get(item.spec.label)
        if ledger is not None:
            ledger.record(item.rel, item.tag, digest=result.digest, target_ref=item.target,
                          media_type=result.media_type or None, now=datetime.now(UTC),
                          source_digest=result.source_digest or None, platforms=result.platforms or None)
            self._changed(ledger)
        if item.state == "changed" and result.state == "copied":
            self._note("updated", Updated(item.source, item.target, item.target_digest, result.digest))
        elif item.state == "new" and result.state == "copied":
            self._note("added", Added(item.source, item.target, result.digest))
        self._attachments(item, result.artifacts, result.artifacts_error)

    def _attachments(self, item: PlanItem, found: list[Attached], error: str | None) -> None:
        """The ledger lists what is attached to the tag now; the CHANGELOG what arrived at the target."""
        ledger = self.ledgers.get(item.spec.label)
        if ledger is not None and error is None:  # a failed check knows only part of it: keep the record
            records = [{"digest": a.digest, "kind": a.kind, "subject": a.subject, "artifact_type": a.artifact_type}
                       for a in found]
            if ledger.set_artifacts(item.rel, item.tag, records):
                self._changed(ledger)
        copied = tuple((artifact_label(a), a.digest) for a in found if a.copied)
        if copied:
            self._note("attached", AttachedChange(item.target, copied))
        if error:
            self.changes.failed.append(Failed(item.source, item.target, error))

    def _already_there(self, item: PlanItem) -> None:
        """Recorded when missing from the ledger (a first run with a fresh ledger, or a bootstrap) or recorded
        for another target (a new --dest that already held it), so the ledger tells what the target holds."""
        ledger = self.ledgers.get(item.spec.label)
        if ledger is None or item.target_digest is None:
            return
        entry = ledger.get(item.rel, item.tag)
        if entry is None or entry.digest is None or entry.target != item.target:
            ledger.record(item.rel, item.tag, digest=item.target_digest, target_ref=item.target,
                          media_type=None, now=datetime.now(UTC), source_digest=item.source_digest)
            self._changed(ledger)

    def _note(self, kind: str, change: Added | Updated | Removed | AttachedChange) -> None:
        getattr(self.changes, kind).append(change)
        if self.journal is not None:
            self.journal.append(kind, change)  # now, before the ledger write that could outlive this run

    # -- writing -----------------------------------------------------------------------------------
    def _changed(self, ledger: Ledger) -> None:
        self._dirty[ledger.source] = ledger
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            try:
                self.flush()
            except Exception as exc:
                # Copies go on (the target is what matters; the next plan HEADs what the ledger lacks);
                # the final flush when the run ends tries again and raises if it fails too.
                log.error("writing the ledger failed: %s", exc)
                raise
            await asyncio.sleep(self.INTERVAL)  # the next write no sooner than a second after this one

    def flush(self) -> None:
        """Write every ledger changed since its last write."""
        self._wake.clear()
        while self._dirty and self.files is not None:
            _, ledger = self._dirty.popitem()
            try:
                self.files.save(ledger)
            except BaseException:
                self._dirty[ledger.source] = ledger  # still unwritten: the final flush tries again
                raise
