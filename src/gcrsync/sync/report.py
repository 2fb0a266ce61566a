"""What a sync run did, for the terminal summary, `--report` JSON and the exit status (SyncReport).

Kept apart from the run itself so the CLI's output code and library users read one plain data model, and
`ok` is decided in one place: any failed image, failed listing, unplanned tag, removal guard, failed prune,
image left pending by an interruption or metadata error makes the run's exit non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from gcrsync.engine.plan import Plan, PlanItem, SourceSpec
from gcrsync.engine.result import Attached
from gcrsync.engine.run import RunOutcome
from gcrsync.ledger import RunChanges
from gcrsync.sync.shard import Shard


@dataclass
class NamespaceResult:
    spec: SourceSpec
    error: str | None = None  # discovery failed: nothing of this namespace was planned
    guard: str | None = None  # the removal guard held this namespace's removals back (sync.guard)


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
    interrupted: bool = False  # a stop request (SIGTERM/SIGINT) arrived during the run
    # What is attached to tags that were already mirrored (checked for new signatures), per item.
    attached: dict[int, tuple[list[Attached], str | None]] = field(default_factory=dict)
    shard: Shard | None = None  # this run planned only this share of the repositories (sync.shard)
    pulled_blobs: dict[str, int] = field(default_factory=dict)  # digest → bytes fetched from a source
    peer_mounts: int = 0  # blobs mounted from another shard's target repository instead of pulled

    EXIT_INTERRUPTED = 3  # the exit status of a run a stop request left with pending images

    @property
    def pending(self) -> list[PlanItem]:
        """Planned images never started because a stop request came first."""
        return list(self.outcome.skipped)

    @property
    def exit_status(self) -> int:
        if self.pending:
            return self.EXIT_INTERRUPTED
        return 0 if self.ok else 1

    @property
    def prune_failed(self) -> list[PlanItem]:
        """Removed-upstream tags that were to be pruned but could not be (refused or failed)."""
        return [i for i in self.plan.by_state("removed") if i.error]

    @property
    def artifact_errors(self) -> list[str]:
        errors = [r.artifacts_error for _, r in self.outcome.results if r.artifacts_error]
        return errors + [e for _, e in self.attached.values() if e]

    @property
    def ok(self) -> bool:
        return (
            not self.outcome.failed
            and not self.artifact_errors
            and not any(n.error or n.guard for n in self.namespaces)
            and not self.plan.by_state("error")
            and not self.prune_failed
            and not self.pending
            and self.metadata_error is None
        )

    def iter_images(self) -> Iterator[dict[str, Any]]:
        """One JSON object per planned image, made as it is asked for (50,000 of them stay cheap)."""
        results = {id(item): res for item, res in self.outcome.results}
        pending = {id(item) for item in self.outcome.skipped}
        for item in self.plan.items:
            res = results.get(id(item))
            attached, attached_error = (res.artifacts, res.artifacts_error) if res else self.attached.get(
                id(item), ([], None))
            yield {
                "source": item.source,
                "target": item.target,
                "state": res.state if res else "pending" if id(item) in pending else item.state,
                "planned": item.state,
                "source_digest": item.source_digest,
                "digest": (res.digest if res and res.digest else item.target_digest),
                "previous_digest": item.target_digest if item.state == "changed" else None,
                "bytes": res.bytes_copied if res else 0,
                "blobs_copied": res.blobs_copied if res else 0,
                "blobs_mounted": res.blobs_mounted if res else 0,
                "blobs_skipped": res.blobs_skipped if res else 0,
                "sparse_children_missing": res.sparse_children_missing if res else 0,
                "artifacts": [a.to_json() for a in attached],
                "artifacts_copied": sum(1 for a in attached if a.copied),
                "error": (res.error if res else item.error) or attached_error,
            }

    def totals(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        images = copied = artifacts = artifacts_copied = 0
        for img in self.iter_images():
            images += 1
            states[str(img["state"])] = states.get(str(img["state"]), 0) + 1
            copied += int(img["bytes"] or 0)
            artifacts += len(img["artifacts"])
            artifacts_copied += int(img["artifacts_copied"])
        return {
            "images": images,
            "states": states,
            "bytes_copied": copied,
            "bytes_pulled": self.bytes_pulled,
            "artifacts": artifacts,
            "artifacts_copied": artifacts_copied,
            "blobs_mounted_from_other_shards": self.peer_mounts,
            "requests": self.requests,
            "retries": self.retries,
        }

    def _head(self) -> dict[str, Any]:
        """Everything of the JSON report but the images."""
        return {
            "started": self.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_seconds": round(self.duration, 3),
            "namespaces": [{"source": n.spec.label, "target": n.spec.target_prefix, "error": n.error,
                            "guard": n.guard}
                           for n in self.namespaces],
            "totals": self.totals(),
            "commit": self.commit,
            "metadata_error": self.metadata_error,
            "interrupted": self.interrupted,
            "shard": str(self.shard) if self.shard is not None else None,
            "pulled_blobs": dict(sorted(self.pulled_blobs.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "images": list(self.iter_images())}

    def write_json(self, out: TextIO) -> None:
        """The JSON report written as it is made, image by image (what `json.dump(self.to_json(), out,
        indent=2, sort_keys=True)` writes, without holding every image's object and the text at once)."""
        head = self._head()
        keys = sorted([*head, "images"])
        out.write("{\n")
        for n, key in enumerate(keys):
            out.write(f"  {json.dumps(key)}: ")
            if key == "images":
                first = True
                out.write("[")
                for image in self.iter_images():
                    out.write(("\n" if first else ",\n") + _indented(json.dumps(image, indent=2, sort_keys=True), 4))
                    first = False
                out.write("]" if first else "\n  ]")
            else:
                out.write(_indented(json.dumps(head[key], indent=2, sort_keys=True), 2).lstrip())
            out.write(",\n" if n < len(keys) - 1 else "\n")
        out.write("}\n")


def _indented(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in text.split("\n"))
