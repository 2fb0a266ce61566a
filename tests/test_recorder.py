"""sync.recorder: what each event does to the ledger and the change lists, and when ledgers are written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gcrsync.engine.plan import PlanItem, SourceSpec, State
from gcrsync.engine.result import Attached, ImageResult
from gcrsync.ledger import Ledger, LedgerFiles, RunChanges
from gcrsync.sync.journal import ChangeJournal
from gcrsync.sync.recorder import (
    AlreadyThere,
    ImageDone,
    NotPlanned,
    PruneFailed,
    Recorder,
    RemovedUpstream,
)

SPEC = SourceSpec(registry="gcr.io", namespace="team", target_prefix="localhost:5000/m")
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
NOW = datetime.now(UTC)


class CountingFiles(LedgerFiles):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.saves = 0

    def save(self, ledger: Ledger) -> Path:
        self.saves += 1
        return super().save(ledger)


def item(tag: str, state: State = "new", target_digest: str | None = None) -> PlanItem:
    return PlanItem(SPEC, "team/app", "app", tag, "localhost:5000/m/app", source_digest=D1,
                    target_digest=target_digest, state=state)


def copied(it: PlanItem, digest: str = D1) -> ImageDone:
    return ImageDone(it, ImageResult(it.source, it.target, digest=digest, source_digest=digest))


async def settle() -> None:
    """Let the writer task run what is ready now (a few loop turns; no waiting on the clock)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_written_at_once_then_at_most_once_per_interval_then_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Recorder, "INTERVAL", 3600.0)  # the second write could only come from the final flush
    files = CountingFiles(tmp_path)
    ledger = files.load(SPEC.label, SPEC.target_prefix)
    async with Recorder({SPEC.label: ledger}, files, RunChanges()) as recorder:
        recorder.record(copied(item("v1")))
        await settle()
        assert files.saves == 1 and files.load(SPEC.label, SPEC.target_prefix).get("app", "v1") is not None
        recorder.record(copied(item("v2")))
        await settle()
        assert files.saves == 1 and files.load(SPEC.label, SPEC.target_prefix).get("app", "v2") is None
    assert files.saves == 2 and files.load(SPEC.label, SPEC.target_prefix).get("app", "v2") is not None


async def test_events_and_what_they_record(tmp_path: Path) -> None:
    files = CountingFiles(tmp_path)
    ledger = files.load(SPEC.label, SPEC.target_prefix)
    ledger.record("app", "old", digest=D2, target_ref="localhost:5000/m/app:old", media_type=None,
                  now=NOW)
    ledger.record("app", "stuck", digest=D2, target_ref="localhost:5000/m/app:stuck", media_type=None,
                  now=NOW)
    changes = RunChanges()
    failed = item("bad")
    async with Recorder({SPEC.label: ledger}, files, changes) as recorder:
        recorder.record(copied(item("new")))
        recorder.record(copied(item("moved", "changed", D2), D1))
        recorder.record(ImageDone(failed, ImageResult(failed.source, failed.target, state="failed", error="boom")))
        recorder.record(AlreadyThere(item("there", "unchanged", D1)))
        recorder.record(RemovedUpstream(item("old", "removed", D2)))
        recorder.record(PruneFailed(item("stuck", "removed", D2), "prune is not supported for x"))
        planning = item("unplanned", "error")
        planning.error = "HEAD failed"
        recorder.record(NotPlanned(planning))
    saved = files.load(SPEC.label, SPEC.target_prefix)
    assert sorted(tag for _, tag, _ in saved.entries()) == ["moved", "new", "stuck", "there"]
    assert [a.target for a in changes.added] == ["localhost:5000/m/app:new"]
    assert [(u.target, u.old_digest, u.new_digest) for u in changes.updated] == [
        ("localhost:5000/m/app:moved", D2, D1)]
    assert [r.target for r in changes.removed] == ["localhost:5000/m/app:old"]
    assert sorted((f.target, f.reason) for f in changes.failed) == [
        ("localhost:5000/m/app:bad", "boom"),
        ("localhost:5000/m/app:stuck", "prune is not supported for x"),
        ("localhost:5000/m/app:unplanned", "HEAD failed"),
    ]


async def test_without_metadata_only_changes_are_kept(tmp_path: Path) -> None:
    ledger = Ledger(SPEC.label, SPEC.target_prefix)
    changes = RunChanges()
    async with Recorder({SPEC.label: ledger}, None, changes) as recorder:
        recorder.record(copied(item("new")))
    assert len(ledger) == 0 and [a.target for a in changes.added] == ["localhost:5000/m/app:new"]


async def test_artifacts_newly_attached_are_journaled_like_images(tmp_path: Path) -> None:
    # A run killed before it publishes leaves its changes to the next run's CHANGELOG block: the signature
    # it copied too, not only the image (the next run finds the signature at the target, copies nothing).
    journal, changes, signed = ChangeJournal(tmp_path / "journal.jsonl"), RunChanges(), item("signed")
    artifacts = [Attached(D1, D2, "sig", tag="sha256-1.sig", copied=True),
                 Attached(D1, "sha256:" + "3" * 64, "referrer", "application/spdx+json", copied=True),
                 Attached(D1, "sha256:" + "4" * 64, "referrer", "application/spdx+json")]  # was there already
    result = ImageResult(signed.source, signed.target, digest=D1, source_digest=D1, artifacts=artifacts)
    async with Recorder({}, None, changes, journal) as recorder:
        recorder.record(ImageDone(signed, result))
    assert len(changes.attached) == 1 and len(changes.attached[0].artifacts) == 2
    replayed = journal.load()
    assert replayed.attached == changes.attached and replayed.added == changes.added
