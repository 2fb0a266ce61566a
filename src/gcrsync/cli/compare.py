"""`gcrsync compare`: what does the target really hold? (the original tool's ledger bootstrap)."""

from __future__ import annotations

import json

import click

from gcrsync.audit import compare, rebuild_ledger
from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import credential_store, load, open_metadata, source_specs, transport_options
from gcrsync.cli.sync import common_source_options, tags_override, user_creds
from gcrsync.ledger import Ledger
from gcrsync.mirror import Mirror, SyncOptions


@click.command("compare")
@click.argument("namespaces", nargs=-1)
@common_source_options
@click.option("--write", is_flag=True, help="Rebuild the ledger from the target's real content and commit it.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@run_async
async def compare_command(
    namespaces: tuple[str, ...], config_path: str | None, dest: str | None, naming: str | None,
    platforms: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...], semver: str | None,
    latest: int | None, query_jobs: int | None, timeout: float | None, proxy: str | None, src_creds: str | None,
    dest_creds: str | None, user: str | None, password: str | None,
    metadata: str | None, write: bool, as_json: bool,
) -> None:
    """Compare SOURCE_NAMESPACE... with what --dest really holds, and with the ledger.

    Prints, per namespace, tags in sync, missing at the target, with another digest at the target, and
    ledger entries the target does not have. Exit 1 if anything differs.

    \b
    Examples:
      gcrsync compare gcr.io/google-containers --dest docker.io/gcrxio
      gcrsync compare -c gcrsync.yaml --write     # bootstrap the ledger from the target
    """
    config = load(config_path)
    specs = source_specs(config, namespaces=namespaces, dest=dest, naming=naming, platforms=platforms,
                         tags=tags_override(include, exclude, semver, latest))
    creds = credential_store(config, src_creds=src_creds, dest_creds=user_creds(dest_creds, user, password),
                             sources=specs)
    options = SyncOptions(query_jobs=query_jobs or config.defaults.query_jobs, dry_run=True)
    repo = open_metadata(config.metadata, metadata)
    try:
        with repo.lock():
            ledgers: dict[str, Ledger] = {s.label: repo.store.load(s.label, s.target_prefix) for s in specs}
            async with registry_client_for(config, transport_options(config, timeout=timeout, proxy=proxy),
                                           creds) as client:
                mirror = Mirror(client, specs, options, repo)
                plan, results = await compare(mirror, ledgers)
            commit = None
            if write:
                for cmp in results:
                    if cmp.error is None:
                        repo.store.save(rebuild_ledger(ledgers[cmp.source], cmp, plan))
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
                        f"{c['ledger_stale']} ledger digests stale")
            for item in cmp.missing:
                stdout_line(f"  missing  {item.target}")
            for item in cmp.differs:
                stdout_line(f"  differs  {item.target} (source {item.source_digest}, target {item.target_digest})")
            for name in cmp.ledger_only:
                stdout_line(f"  ledger-only  {name}")
        if write:
            stdout_line(f"ledger rebuilt{f'; commit {commit[:12]}' if commit else ' (no change)'}")
    if any(c.error or c.missing or c.differs or c.ledger_only for c in results) and not write:
        raise SystemExit(1)
