"""Terminal output for sync-like commands: live progress on a terminal, tables and plain lines otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from gcrsync.cli.common import stderr_console, stderr_is_terminal
from gcrsync.engine.plan import Plan, PlanItem

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from gcrsync.engine.result import ImageResult
    from gcrsync.sync import SyncReport


def stdout() -> Console:
    # Created on use, so a redirected/captured sys.stdout (tests, pipes) is honoured. Off a terminal, tables
    # get room for full references instead of being squeezed to 80 columns.
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=250)
    return console


def short(digest: str | None) -> str:
    if not digest:
        return "-"
    algo, _, hexd = digest.partition(":")
    return f"{algo}:{hexd[:12]}"


class SyncProgress:
    """Images done/total with a bar, and bytes moved with their rate, on a terminal only.

    Uses the same Console as the log handler, so log lines print above the live bar instead of through it.
    """

    def __init__(self) -> None:
        self.enabled = stderr_is_terminal()
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.moved = 0
        self.started = time.monotonic()

    def __enter__(self) -> SyncProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[transfer]}"), TimeElapsedColumn(),
                                     console=stderr_console())
            self.progress.start()
        return self

    def planned(self, plan: Plan) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("images", total=len(plan.work), transfer="")
            self.started = time.monotonic()

    def image_done(self, item: PlanItem, result: ImageResult) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, 1)

    def advance_bytes(self, n: int) -> None:
        self.moved += n
        if self.progress is not None and self.task is not None:
            rate = self.moved / max(time.monotonic() - self.started, 1e-3)
            self.progress.update(self.task, transfer=f"{human_bytes(self.moved)} at {human_bytes(rate)}/s")

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def print_plan(report: SyncReport) -> None:
    from rich.table import Table

    console = stdout()
    table = Table(title="plan", show_lines=False)
    for col in ("state", "source", "target", "source digest", "target digest"):
        table.add_column(col)
    order = {"changed": 0, "new": 1, "removed": 2, "held": 3, "error": 4, "unchanged": 5}
    for item in sorted(report.plan.items, key=lambda i: (order[i.state], i.source)):
        table.add_row(item.state, item.source, item.target, short(item.source_digest),
                      item.error or short(item.target_digest))
    console.print(table)
    _namespace_errors(report)
    counts = report.plan.counts()
    console.print("plan: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + " (dry run: nothing changed)")


def print_summary(report: SyncReport) -> None:
    """The results table (rich, only when something was copied), then plain lines: a no-op imports no rich."""
    if report.outcome.results:
        from rich.table import Table

        table = Table(title="sync")
        for col in ("result", "source", "target", "digest", "bytes", "blobs c/m/s", "error"):
            table.add_column(col)
        for item, res in sorted(report.outcome.results, key=lambda p: p[0].source):
            label = res.state if item.state != "changed" or res.state != "copied" else "updated"
            if res.sparse_children_missing:
                label += f" (sparse: {res.sparse_children_missing} absent)"
            table.add_row(label, item.source, item.target, short(res.digest), human_bytes(res.bytes_copied),
                          f"{res.blobs_copied}/{res.blobs_mounted}/{res.blobs_skipped}", res.error or "")
        stdout().print(table)
    _namespace_errors(report)
    for item in report.pending:
        click.echo(f"pending {item.source} → {item.target}: not started, the run was interrupted")
    for item in report.plan.by_state("error"):
        click.echo(f"failed {item.source} → {item.target}: {item.error}")
    for item in report.prune_failed:
        click.echo(f"not pruned {item.target}: {item.error}")
    data = report.totals()
    counts = report.plan.counts()
    failed = len(report.outcome.failed)
    skipped = sum(r.state == "skipped" for _, r in report.outcome.results)
    sparse = sum(r.sparse_children_missing > 0 for _, r in report.outcome.results)
    click.echo(
        f"synced {len(report.outcome.results) - failed - skipped} images ({human_bytes(data['bytes_copied'])}), "
        f"{counts['unchanged']} unchanged, {failed + counts['error']} failed, {counts['removed']} removed upstream"
        + (f", {skipped} skipped (platform)" if skipped else "")
        + (f", {sparse} sparse (children absent at the source)" if sparse else "")
        + (f", {counts['held']} removals held by the guard" if counts["held"] else "")
        + (f", {len(report.prune_failed)} not pruned" if report.prune_failed else "")
        + (f", {len(report.pending)} pending (interrupted)" if report.pending else "") + "; "
        f"{report.requests} requests, {report.retries} retries, {report.duration:.1f}s"
        + (f"; metadata commit {report.commit[:12]}" if report.commit else "")
    )


def _namespace_errors(report: SyncReport) -> None:
    for ns in report.namespaces:
        if ns.error:
            click.echo(f"listing {ns.spec.label} failed: {ns.error}")
        if ns.guard:
            click.echo(ns.guard)
