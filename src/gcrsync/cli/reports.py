"""`gcrsync merge-reports`: the `--report` files of a sharded run's shards, read as one run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcrsync.cli.common import run_async, stdout_line
from gcrsync.sync.shardreport import merge_reports


@click.command("merge-reports")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@run_async  # for its one-line errors (exit 2 for a file that is not a report)
async def merge_reports_command(reports: tuple[str, ...], as_json: bool) -> None:
    """Sum the --report files of the shards of one sharded run and count cross-shard duplicate pulls.

    Exit 1 when a shard of the split has no report (its share was not mirrored, or its report was lost).

    \b
    Example (after a CI matrix uploaded report-0.json … report-3.json):
      gcrsync merge-reports report-*.json
    """
    merged = merge_reports([Path(r) for r in reports])
    if as_json:
        stdout_line(json.dumps(merged.to_json(), indent=2, sort_keys=True))
    else:
        states = ", ".join(f"{n} {s}" for s, n in sorted(merged.states.items())) or "no images"
        stdout_line(f"shards: {', '.join(merged.shards)}" + (f"; missing: {', '.join(merged.missing)}"
                                                             if merged.missing else ""))
        stdout_line(f"images: {states}")
        stdout_line(f"pulled from the sources: {merged.bytes_pulled} bytes, {merged.unique_bytes_pulled} unique; "
                    f"cross-shard duplicate pulls: {merged.duplicate_blobs} blobs, {merged.duplicate_bytes} bytes; "
                    f"mounted from other shards: {merged.peer_mounts} blobs")
    if merged.missing:
        raise SystemExit(1)
