"""`gcrsync sync`: mirror whole namespaces, incrementally, optionally forever on an interval."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import click

from gcrsync.cli import output
from gcrsync.cli.common import registry_client_for, run_async
from gcrsync.cli.settings import checked, open_metadata, parse_duration
from gcrsync.cli.sources import SourceArgs, source_options
from gcrsync.config import MaxRemoved, VerifyEvery
from gcrsync.engine.blobcache import BlobLocations
from gcrsync.errors import ConfigError
from gcrsync.ledger import MetadataRepo, PushFailed
from gcrsync.sync import Mirror, SyncOptions, SyncReport, verification
from gcrsync.sync.journal import ChangeJournal
from gcrsync.sync.last_run import save_last_run
from gcrsync.sync.shard import Shard

log = logging.getLogger("gcrsync")


@click.command("sync")
@source_options
@click.option("-j", "--jobs", type=int, help="Images copied at once (the original's processlimit). Default 4.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report of the run here.")
@click.option("--trust-ledger", is_flag=True, default=None, help="Take the target's digests from the ledger.")
@click.option("--verify-target", is_flag=True, help="HEAD every target tag this run (a full verification), "
              "whatever the schedule or --trust-ledger say.")
@click.option("--verify-target-every", help="Verify the target fully every N-th run (7) or after a duration "
              "(7d); other runs check tag presence with one tags/list per repository (default 7).")
@click.option("--prune", is_flag=True, default=None, help="Delete target tags whose source tag is gone.")
@click.option("--max-removed", help="Removal guard: the most ledger entries of one namespace a run may record "
              "as removed upstream, a count or N% (default 25%, and never all unless 100%).")
@click.option("--every", help="Run forever: start again this long after each run ends (e.g. 24h).")
@click.option("--image-deadline", help="Fail an image that takes longer than this (e.g. 30m).")
@click.option("--stop-grace", help="After SIGTERM/SIGINT, how long images in flight may take to finish before "
              "they are given up and reported pending (default 60s).")
@click.option("--message", help="Commit message for the metadata repository.")
@click.option("--shard", help="Mirror only shard I of N (I/N, counting from 0), or auto: from JOB_COMPLETION_INDEX "
              "and JOB_COMPLETIONS (Kubernetes Indexed Job), CI_NODE_INDEX and CI_NODE_TOTAL (GitLab), or "
              "GCRSYNC_SHARD_INDEX and GCRSYNC_SHARD_COUNT. See `gcrsync plan --shards N`.")
@run_async
async def sync_command(
    args: SourceArgs, jobs: int | None, dry_run: bool, as_json: bool, report: str | None,
    trust_ledger: bool | None, verify_target: bool, verify_target_every: str | None, prune: bool | None,
    max_removed: str | None, every: str | None, image_deadline: str | None, stop_grace: str | None,
    message: str | None, shard: str | None,
) -> None:
    """Mirror every repository and tag under SOURCE_NAMESPACE... to --dest.

    \b
    Examples:
      gcrsync sync gcr.io/google-containers --dest docker.io/gcrxio --dry-run
      gcrsync sync localhost:5000/team --dest oci:./mirror --latest 3
      gcrsync sync -c gcrsync.yaml --report run.json
      gcrsync sync -c gcrsync.yaml --every 24h
    """
    the_shard = Shard.parse(shard) if shard is not None else None  # bad input: exit 2 before anything else
    config, specs = args.config, args.specs
    defaults = config.defaults
    jobs = checked("--jobs", jobs, "jobs")
    if report and not Path(report).resolve().parent.is_dir():  # found out now, not after an hour of copying
        raise ConfigError(f"--report {report}: its directory does not exist")
    schedule = _verify_every(verify_target_every, defaults.verify_target_every)
    options = SyncOptions(
        jobs=defaults.jobs if jobs is None else jobs,
        query_jobs=args.query_limit,
        trust_ledger=(defaults.trust_ledger if trust_ledger is None else trust_ledger) and not verify_target,
        dry_run=dry_run,
        blob_locations=None if dry_run else BlobLocations(),
        prune=defaults.prune if prune is None else prune,
        image_deadline=parse_duration(image_deadline, "--image-deadline") if image_deadline is not None else None,
        max_removed=_removal_limit(max_removed, defaults.max_removed),
        stop_grace=parse_duration(stop_grace, "--stop-grace") if stop_grace is not None else 60.0,
        shard=the_shard,
    )
    interval = parse_duration(every, "--every") if every is not None else None
    creds = args.credentials()
    transport = args.transport()  # checked before anything is opened
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    commit_message = message or config.metadata.message
    label = f"shard {the_shard}" if the_shard is not None else None
    if label is not None:
        commit_message = f"{commit_message} ({label})"
    clone_group = f"shard-{the_shard.index}-of-{the_shard.count}" if the_shard is not None else None
    status = 0
    while True:
        repo = open_metadata(config.metadata, args.metadata, clone_group=clone_group)
        options.verify_target = verification.due(specs, schedule, force=verify_target)
        try:
            with repo.lock():
                async with registry_client_for(config, transport, creds) as client:
                    mirror = Mirror(client, specs, options, repo, ChangeJournal.for_workdir(repo.workdir))
                    with output.SyncProgress() as progress:
                        result = await mirror.run(stop=stop, on_bytes=progress.advance_bytes,
                                                  on_image=progress.image_done, on_plan=progress.planned)
                if not dry_run:
                    _publish(repo, result, commit_message, label)
                    if mirror.journal is not None:
                        mirror.journal.clear()  # its changes are in the CHANGELOG now
        finally:
            repo.close()
        _show(result, dry_run=dry_run, as_json=as_json)
        if not dry_run:
            failures = _failures_by_namespace(result)
            save_last_run(failures, _pending_by_namespace(result))
            if not options.trust_ledger:
                verification.record(specs, options.verify_target, [label for label, n in failures.items() if n])
        if report:
            with Path(report).open("w", encoding="utf-8") as out:
                result.write_json(out)
        status = max(status, result.exit_status)  # 3 (interrupted) outranks 1 (failed)
        if interval is None or stop.is_set():
            break
        log.info("next run in %s", _human(interval))
        try:
            await asyncio.wait_for(stop.wait(), interval)
            break
        except TimeoutError:
            continue
    if status:
        raise SystemExit(status)


def _verify_every(option: str | None, configured: int | str) -> VerifyEvery:
    try:
        return VerifyEvery(configured if option is None else option)
    except ValueError as exc:
        raise ConfigError(f"--verify-target-every: {exc}") from None


def _removal_limit(option: str | None, configured: int | str) -> MaxRemoved:
    try:
        return MaxRemoved(configured if option is None else option)
    except ValueError as exc:
        raise ConfigError(f"--max-removed: {exc}") from None


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        raise KeyboardInterrupt
    log.warning("%s: finishing the images in flight, then writing the ledger and exiting", sig.name)
    stop.set()


def _publish(repo: MetadataRepo, result: SyncReport, message: str, label: str | None) -> None:
    try:
        result.commit = repo.publish(message, result.changes, label=label)
    except PushFailed as exc:
        result.metadata_error = str(exc)
        log.error("%s", exc)


def _show(result: SyncReport, *, dry_run: bool, as_json: bool) -> None:
    if dry_run and as_json:
        result.write_json(sys.stdout)
        return
    output.print_plan(result) if dry_run else output.print_summary(result)


def _failures_by_namespace(result: SyncReport) -> dict[str, int]:
    failed = {ns.spec.label: (1 if ns.error else 0) for ns in result.namespaces}
    for item, _ in result.outcome.failed:
        failed[item.spec.label] = failed.get(item.spec.label, 0) + 1
    for item in result.plan.by_state("error"):
        failed[item.spec.label] = failed.get(item.spec.label, 0) + 1
    return failed


def _pending_by_namespace(result: SyncReport) -> dict[str, int]:
    pending: dict[str, int] = {}
    for item in result.pending:
        pending[item.spec.label] = pending.get(item.spec.label, 0) + 1
    return pending


def _human(seconds: float) -> str:
    return time.strftime("%Hh%Mm%Ss", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f}d"
