"""`gcrsync compare`: what does the target really hold? (the original tool's ledger bootstrap)."""

from __future__ import annotations

import json

import click

from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import open_metadata
from gcrsync.cli.sources import SourceArgs, source_options
from gcrsync.ledger import Ledger
from gcrsync.sync import Mirror, SyncOptions
from gcrsync.sync.compare import compare, rebuild_ledger


@click.command("compare")
@source_options
@click.option("--write", is_flag=True, help="Rebuild the ledger from the target's real content and commit it.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@run_async
async def compare_command(args: SourceArgs, write: bool, as_json: bool) -> None:
    """Compare SOURCE_NAMESPACE... with what --dest really holds, and with the ledger.

    Prints, per namespace, tags in sync, missing at the target, with another digest at the target, and
    ledger entries the target does not have. Exit 1 if anything differs, and (even with --write, which keeps
    their ledger entries) if a listing or a check failed.

    \b
    Examples:
      gcrsync compare gcr.io/google-containers --dest docker.io/gcrxio
      gcrsync compare -c gcrsync.yaml --write     # bootstrap the ledger from the target
    """
    config, specs = args.config, args.specs
    creds = args.credentials()
    options = SyncOptions(query_jobs=args.query_limit, dry_run=True)
    repo = open_metadata(config.metadata, args.metadata)
    try:
        with repo.lock():
            ledgers: dict[str, Ledger] = {s.label: repo.ledgers.load(s.label, s.target_prefix) for s in specs}
            async with registry_client_for(config, args.transport(), creds) as client:
                mirror = Mirror(client, specs, options, repo)
                plan, results = await compare(mirror, ledgers)
            commit = None
            if write:
                for cmp in results:
                    if cmp.error is None:
                        repo.ledgers.save(rebuild_ledger(ledgers[cmp.source], cmp, plan))
                commit = repo.publish(config.metadata.message + " (ledger rebuilt by compare)")
    finally:
        repo.close()
    if as_json:
        stdout_line(json.dumps([c.to_json() for c in results], indent=2, sort_keys=True))
    else:
        for cmp in results:
            if cmp.error:
                stdout_line(f"{cmp.source} → {cmp.target}: listing failed: {cmp.error}")
                continue
            c = cmp.counts()
            stdout_line(f"{cmp.source} → {cmp.target}: {c['in_sync']} in sync, {c['missing']} missing at target, "
                        f"{c['differs']} differ, {c['ledger_only']} in ledger but not at target, "
                        f"{c['ledger_stale']} ledger digests stale, {c['failed']} could not be checked")
            for item in cmp.missing:
                stdout_line(f"  missing  {item.target}")
            for item in cmp.differs:
                stdout_line(f"  differs  {item.target} (source {item.source_digest}, target {item.target_digest})")
            for name in cmp.ledger_only:
                stdout_line(f"  ledger-only  {name}")
            for item in cmp.failed:
                stdout_line(f"  failed  {item.target}: {item.error} (ledger entry kept)")
        if write:
            stdout_line(f"ledger rebuilt{f'; commit {commit[:12]}' if commit else ' (no change)'}")
    # --write settles the differences, but never what could not be checked: that stays an error.
    if any(c.error or c.failed for c in results) or (
            any(c.missing or c.differs or c.ledger_only for c in results) and not write):
        raise SystemExit(1)
