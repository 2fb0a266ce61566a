"""CHANGELOG.md: one block per run that changed something, newest first.

The file is the human-readable history of the mirror (the ledger is the machine-readable state). A block:

    ## 2026-11-29 03:00:00 UTC

    ### Added
    - `gcr.io/google-containers/pause:3.1` → `docker.io/gcrxio/pause:3.1` (sha256:abcdef123456)

Blocks are kept as exact text so that a run that lost a push race can re-apply its own blocks on top of the
remote's file (see split_blocks / prepend_blocks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gcrsync.errors import LedgerError
from gcrsync.ledger.files import atomic_write

HEADER = (
    "# Changelog\n"
    "\n"
    "Images mirrored by gcrsync, newest run first. Each run lists the tags it copied for the first time\n"
    "(Added), the tags whose digest changed upstream (Updated, old → new), the tags that disappeared\n"
    "upstream (Removed upstream) and the copies that failed (Failed). The per-namespace JSON ledgers hold\n"
    "the full state.\n"
    "\n"
)
MAX_REASON = 200
_HEADING = "## "


@dataclass(frozen=True)
class Added:
    source: str
    target: str
    digest: str


@dataclass(frozen=True)
class Updated:
    source: str
    target: str
    old_digest: str | None  # None when the old entry was a legacy one (digest never known)
    new_digest: str


@dataclass(frozen=True)
class Removed:
    source: str
    target: str


@dataclass(frozen=True)
class Failed:
    source: str
    target: str
    reason: str


@dataclass(frozen=True)
class Attached:
    """Artifacts newly attached to a mirrored tag (signatures, attestations, SBOMs, other referrers)."""

    target: str
    artifacts: tuple[tuple[str, str], ...]  # (kind, digest): kind is "signature", "attestation", "sbom", a type


@dataclass
class RunChanges:
    added: list[Added] = field(default_factory=list)
    updated: list[Updated] = field(default_factory=list)
    removed: list[Removed] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    attached: list[Attached] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.updated or self.removed or self.failed or self.attached)

    def extend(self, other: RunChanges) -> None:
        """Fold another namespace's changes into this run's."""
        self.added.extend(other.added)
        self.updated.extend(other.updated)
        self.removed.extend(other.removed)
        self.failed.extend(other.failed)
        self.attached.extend(other.attached)


def short_digest(digest: str | None) -> str:
    """'sha256:abcdef123456' (12 hex digits), or 'unknown'."""
    if not digest:
        return "unknown"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def _code(text: str) -> str:
    # References cannot contain backticks or newlines; anything that does is not allowed to break the layout.
    return "`" + " ".join(text.replace("`", "'").split()) + "`"


def _reason(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def render_block(run_time: datetime, changes: RunChanges, label: str | None = None) -> str:
    """The Markdown block for one run (ends with a blank line). Entries are sorted so output is stable.

    `label` names the part of the run the block tells (a shard's "shard 1/4": each shard writes its own)."""
    if run_time.tzinfo is None:
        run_time = run_time.replace(tzinfo=UTC)
    suffix = f" · {label}" if label else ""
    lines = [f"{_HEADING}{run_time.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC{suffix}", ""]

    def section(title: str, rows: Iterable[str]) -> None:
        items = sorted(rows)
        if items:
            lines.extend([f"### {title}", "", *items, ""])

    section("Added", (f"- {_code(a.source)} → {_code(a.target)} ({short_digest(a.digest)})" for a in changes.added))
    section("Updated", (f"- {_code(u.source)} → {_code(u.target)} "
                        f"({short_digest(u.old_digest)} → {short_digest(u.new_digest)})" for u in changes.updated))
    section("Removed upstream", (f"- {_code(r.source)} → {_code(r.target)}" for r in changes.removed))
    section("Signatures and other attached artifacts", (
        f"- {_code(a.target)}: " + ", ".join(f"{kind} ({short_digest(digest)})" for kind, digest in a.artifacts)
        for a in changes.attached))
    section("Failed", (f"- {_code(f.source)} → {_code(f.target)}: {_reason(f.reason)}" for f in changes.failed))
    return "\n".join(lines) + "\n"


def split_blocks(text: str) -> list[str]:
    """The run blocks of a changelog's text, in file order; anything before the first heading is dropped."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith(_HEADING):
            if current is not None:
                blocks.append("".join(current))
            current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        blocks.append("".join(current))
    return [b if b.endswith("\n\n") else b.rstrip("\n") + "\n\n" for b in blocks]


def _body(text: str) -> str:
    """Everything after our header; a file we did not create (e.g. the original gcrsync's) is kept whole."""
    if text.startswith(HEADER):
        return text[len(HEADER):]
    return text


def prepend_blocks(path: Path, blocks: list[str]) -> bool:
    """Put blocks (newest first) at the top of the changelog, under the header. False if there were none."""
    if not blocks:
        return False
    try:
        existing = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path.name}: cannot read: {exc}") from None
    atomic_write(path, HEADER + "".join(blocks) + _body(existing))
    return True


def prepend(path: Path, run_time: datetime, changes: RunChanges, label: str | None = None) -> bool:
    """Prepend this run's block; writes nothing and returns False when the run changed nothing."""
    if changes.empty:
        return False
    return prepend_blocks(path, [render_block(run_time, changes, label)])
