"""`gcrsync sync`: mirror whole namespaces, incrementally, optionally forever on an interval."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path

import click

from gcrsync.audit import save_last_run
from gcrsync.cli import output
from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import (
    credential_store,
    load,
    open_metadata,
    parse_duration,
    source_specs,
    transport_options,
)
from gcrsync.config import TagsConfig
from gcrsync.engine.blobcache import BlobLocations
from gcrsync.errors import ConfigError
from gcrsync.ledger import MetadataRepo, PushFailed
from gcrsync.mirror import Mirror, SyncOptions, SyncReport

log = logging.getLogger("gcrsync")


def common_source_options(func: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file."),
        click.option("--dest", help="Target prefix: registry/namespace (e.g. docker.io/gcrxio) or oci:DIR."),
        click.option("--naming", help="flatten (default) | preserve | prefix | a template like '{name}'."),
        click.option("--platform", "platforms", multiple=True, help="Only these platforms (repeatable)."),
        click.option("--include", multiple=True, help="Only tags fully matching this regex (repeatable)."),
        click.option("--exclude", multiple=True, help="Skip tags fully matching this regex (repeatable)."),
        click.option("--semver", help="Only tags in this semver range, e.g. '>=1.2 <2'."),
        click.option("--latest", type=int, help="Only the newest N tags per repository."),
        click.option("--query-jobs", type=int, help="Listing/HEAD requests at once (the original's querylimit)."),
        click.option("--timeout", type=float, help="Connect timeout in seconds (the original's httptimeout)."),
        click.option("--proxy", help="HTTP(S) proxy URL for registry traffic."),
        click.option("--src-creds", envvar="GCRSYNC_SRC_CREDS", help="USER:PASSWORD for the sources "
                     "(prefer the GCRSYNC_SRC_CREDS env var: arguments are visible to other processes)."),
        click.option("--dest-creds", envvar="GCRSYNC_DEST_CREDS", help="USER:PASSWORD for the target "
                     "(prefer GCRSYNC_DEST_CREDS)."),
        click.option("--user", help="Target registry user (the original's --user; password from "
                     "GCRSYNC_PASSWORD or --password)."),
        click.option("--password", envvar="GCRSYNC_PASSWORD", help="Target registry password (prefer the "
                     "GCRSYNC_PASSWORD env var)."),
        click.option("--metadata", help="Metadata repo: a directory, a git work tree or a git URL "
                     "(default: a git repo in the user's data directory)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def user_creds(dest_creds: str | None, user: str | None, password: str | None) -> str | None:
    """--user/--password (the original tool's flags) are another spelling of --dest-creds."""
    if dest_creds or not user:
        return dest_creds
    if password is None:
        raise ConfigError("--user needs a password: set GCRSYNC_PASSWORD (or --password)")
    return f"{user}:{password}"


def tags_override(include: tuple[str, ...], exclude: tuple[str, ...], semver: str | None,
                  latest: int | None) -> TagsConfig | None:
    if not (include or exclude or semver or latest):
        return None
    return TagsConfig(include=list(include), exclude=list(exclude), semver=semver, latest=latest)


@click.command("sync")
@click.argument("namespaces", nargs=-1)
@common_source_options
@click.option("-j", "--jobs", type=int, help="Images copied at once (the original's processlimit). Default 4.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report of the run here.")
@click.option("--trust-ledger", is_flag=True, default=None, help="Take the target's digests from the ledger.")
@click.option("--prune", is_flag=True, default=None, help="Delete target tags whose source tag is gone.")
@click.option("--every", help="Run forever: start again this long after each run ends (e.g. 24h).")
@click.option("--image-deadline", help="Fail an image that takes longer than this (e.g. 30m).")
@click.option("--message", help="Commit message for the metadata repository.")
@run_async
async def sync_command(
    namespaces: tuple[str, ...], config_path: str | None, dest: str | None, naming: str | None,
    platforms: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...], semver: str | None,
    latest: int | None, query_jobs: int | None, timeout: float | None, proxy: str | None, src_creds: str | None,
    dest_creds: str | None, user: str | None, password: str | None,
    metadata: str | None, jobs: int | None, dry_run: bool, as_json: bool,
    report: str | None, trust_ledger: bool | None, prune: bool | None, every: str | None, image_deadline: str | None,
    message: str | None,
) -> None:
    """Mirror every repository and tag under SOURCE_NAMESPACE... to --dest.

    \b
    Examples:
      gcrsync sync gcr.io/google-containers --dest docker.io/gcrxio --dry-run
      gcrsync sync localhost:5000/team --dest oci:./mirror --latest 3
      gcrsync sync -c gcrsync.yaml --report run.json
      gcrsync sync -c gcrsync.yaml --every 24h
    """
    config = load(config_path)
    specs = source_specs(config, namespaces=namespaces, dest=dest, naming=naming, platforms=platforms,
                         tags=tags_override(include, exclude, semver, latest))
    defaults = config.defaults
    options = SyncOptions(
        jobs=jobs or defaults.jobs,
        query_jobs=query_jobs or defaults.query_jobs,
        trust_ledger=defaults.trust_ledger if trust_ledger is None else trust_ledger,
        dry_run=dry_run,
        blob_locations=None if dry_run else BlobLocations(),
        prune=defaults.prune if prune is None else prune,
        image_deadline=parse_duration(image_deadline) if image_deadline else None,
    )
    interval = parse_duration(every) if every else None
    creds = credential_store(config, src_creds=src_creds, dest_creds=user_creds(dest_creds, user, password),
                             sources=specs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    commit_message = message or config.metadata.message
    all_ok = True
    while True:
        repo = open_metadata(config.metadata, metadata)
        try:
            with repo.lock():
                async with registry_client_for(config, transport_options(config, timeout=timeout, proxy=proxy),
                                               creds) as client:
                    mirror = Mirror(client, specs, options, repo)
                    with output.SyncProgress() as progress:
                        result = await mirror.run(stop=stop, on_bytes=progress.advance_bytes,
                                                  on_image=progress.image_done, on_plan=progress.planned)
                if not dry_run:
                    _publish(repo, result, commit_message)
        finally:
            repo.close()
        _show(result, dry_run=dry_run, as_json=as_json)
        if not dry_run:
            save_last_run(_failures_by_namespace(result))
        if report:
            Path(report).write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        all_ok = all_ok and result.ok
        if interval is None or stop.is_set():
            break
        log.info("next run in %s", _human(interval))
        try:
            await asyncio.wait_for(stop.wait(), interval)
            break
        except TimeoutError:
            continue
    if not all_ok:
        raise SystemExit(1)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        raise KeyboardInterrupt
    log.warning("%s: finishing the images in flight, then writing the ledger and exiting", sig.name)
    stop.set()


def _publish(repo: MetadataRepo, result: SyncReport, message: str) -> None:
    try:
        result.commit = repo.publish(message, result.changes)
    except PushFailed as exc:
        result.metadata_error = str(exc)
        log.error("%s", exc)


def _show(result: SyncReport, *, dry_run: bool, as_json: bool) -> None:
    if dry_run and as_json:
        stdout_line(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return
    output.print_plan(result) if dry_run else output.print_summary(result)


def _failures_by_namespace(result: SyncReport) -> dict[str, int]:
    failed = {ns.spec.label: (1 if ns.error else 0) for ns in result.namespaces}
    for item, _ in result.outcome.failed:
        failed[item.spec.label] = failed.get(item.spec.label, 0) + 1
    for item in result.plan.by_state("error"):
        failed[item.spec.label] = failed.get(item.spec.label, 0) + 1
    return failed


def _human(seconds: float) -> str:
    return time.strftime("%Hh%Mm%Ss", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f}d"
