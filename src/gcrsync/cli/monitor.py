"""`gcrsync monitor`: periodically count what is synced, pending and failing, per namespace."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click

from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import (
    open_metadata,
    parse_duration,
)
from gcrsync.cli.sources import SourceArgs, source_options
from gcrsync.ledger import Ledger
from gcrsync.ledger.files import atomic_write
from gcrsync.sync import Mirror, SyncOptions
from gcrsync.sync.last_run import load_last_run
from gcrsync.sync.metrics import prometheus_text


@click.command("monitor")
@source_options
@click.option("--interval", default="5m", show_default=True, help="Time between reports.")
@click.option("--count", type=int, default=None, help="Stop after N reports (default: forever).")
@click.option("--metrics", type=click.Path(dir_okay=False), help="Also write a Prometheus text-format file.")
@click.option("--trust-ledger/--check-target", default=True, show_default=True,
              help="Compare with the ledger (cheap) or HEAD every target tag.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per report.")
@run_async
async def monitor_command(
    args: SourceArgs, interval: str, count: int | None, metrics: str | None, trust_ledger: bool, as_json: bool,
) -> None:
    """Every --interval, print per namespace: tags synced, pending new, pending changed, failed last run.

    \b
    Examples:
      gcrsync monitor -c gcrsync.yaml --interval 10m --metrics /var/lib/node_exporter/gcrsync.prom
      gcrsync monitor gcr.io/distroless --dest docker.io/me --count 1
    """
    config, specs = args.config, args.specs
    creds = args.credentials()
    seconds = parse_duration(interval, "--interval")
    if count is not None and count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--count")
    done = 0
    async with registry_client_for(config, args.transport(), creds) as client:
        while True:
            repo = open_metadata(config.metadata, args.metadata)
            try:
                ledgers: dict[str, Ledger] = {s.label: repo.ledgers.load(s.label, s.target_prefix) for s in specs}
            finally:
                repo.close()
            options = SyncOptions(query_jobs=args.query_limit, dry_run=True,
                                  trust_ledger=trust_ledger)
            plan, namespaces_result = await Mirror(client, specs, options).plan(ledgers)
            failed = load_last_run()
            interrupted = load_last_run("pending")
            rows = []
            for ns in namespaces_result:
                items = [i for i in plan.items if i.spec is ns.spec]
                rows.append({
                    "namespace": ns.spec.label,
                    "synced": sum(i.state == "unchanged" for i in items),
                    "pending_new": sum(i.state == "new" for i in items),
                    "pending_changed": sum(i.state == "changed" for i in items),
                    "failed_last_run": failed.get(ns.spec.label, 0),
                    "pending_last_run": interrupted.get(ns.spec.label, 0),  # left undone by an interruption
                    "error": ns.error,
                })
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if as_json:
                stdout_line(json.dumps({"time": stamp, "namespaces": rows}, sort_keys=True))
            else:
                for row in rows:
                    if row["error"]:
                        stdout_line(f"{stamp} {row['namespace']}: listing failed: {row['error']}")
                    else:
                        stdout_line(f"{stamp} {row['namespace']}: {row['synced']} synced, {row['pending_new']} "
                                    f"pending new, {row['pending_changed']} pending changed, "
                                    f"{row['failed_last_run']} failed last run"
                                    + (f", {row['pending_last_run']} left pending by an interrupted last run"
                                       if row["pending_last_run"] else ""))
            if metrics:
                atomic_write(Path(metrics), prometheus_text(rows, time.time()))
            done += 1
            if count is not None and done >= count:
                return
            await asyncio.sleep(seconds)
