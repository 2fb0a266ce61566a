"""`gcrsync plan --shards N`: how a sync's repositories split into N shards, and how even the split is."""

from __future__ import annotations

import asyncio
import json

import click

from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.sources import SourceArgs, source_options
from gcrsync.errors import ConfigError, GcrsyncError, error_text
from gcrsync.sync import Mirror, SyncOptions
from gcrsync.sync.shard import MAX_SHARDS, Shard, Split, balance, split_listings


@click.command("plan")
@source_options
@click.option("--shards", type=int, required=True, help="Number of shards (workers) to split the sync into.")
@click.option("--repos", "show_repos", is_flag=True, help="Also list every repository with its shard.")
@click.option("--json", "as_json", is_flag=True, help="Print the split as JSON (always with the repositories).")
@run_async
async def plan_command(args: SourceArgs, shards: int, show_repos: bool, as_json: bool) -> None:
    """Print how `gcrsync sync --shard I/N` splits SOURCE_NAMESPACE... into N shares.

    Lists the namespaces (no manifest request), applies the tag filters and prints per shard its
    repositories, tags and bytes (when the listing gives sizes), and the balance (max/mean, 1.00 is even).
    `gcrsync sync --dry-run --shard I/N` shows one shard's full plan.

    \b
    Examples:
      gcrsync plan gcr.io/google-containers --dest docker.io/gcrxio --shards 4
      gcrsync plan -c gcrsync.yaml --shards 8 --json
    """
    if not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"--shards {shards}: must be between 1 and {MAX_SHARDS}")
    specs = args.specs
    options = SyncOptions(query_jobs=args.query_limit)
    async with registry_client_for(args.config, args.transport(), args.credentials()) as client:
        mirror = Mirror(client, specs, options)
        listings = await asyncio.gather(*(mirror.discover(s) for s in specs), return_exceptions=True)
    failed = [(s, x) for s, x in zip(specs, listings, strict=True) if isinstance(x, BaseException)]
    for _, exc in failed:
        if not isinstance(exc, Exception):
            raise exc
    if failed:  # a split without a namespace would not be the split the shards compute
        raise GcrsyncError("; ".join(f"listing {s.label} failed: {error_text(x)}" for s, x in failed))
    split = split_listings([(s, x) for s, x in zip(specs, listings, strict=True) if isinstance(x, list)],
                           shards)
    if as_json:
        stdout_line(json.dumps(_as_json(split), indent=2, sort_keys=True))
        return
    _print(split, show_repos)


def _as_json(split: Split) -> dict[str, object]:
    tags, size = split.loads("tags"), split.loads("bytes")
    return {
        "shards": split.count,
        "weighed_by": "bytes" if split.by_bytes else "tags",
        "balance": {"tags": round(balance(tags), 3), "bytes": round(balance(size), 3) if split.by_bytes else None},
        "per_shard": [{"shard": str(Shard(i, split.count)), "repositories": sum(r.shard == i for r in split.repos),
                       "tags": tags[i], "bytes": size[i] if split.by_bytes else None} for i in range(split.count)],
        "repositories": [{"namespace": r.spec.label, "repository": r.rel, "tags": r.tags, "bytes": r.bytes,
                          "shard": r.shard} for r in split.repos],
    }


def _print(split: Split, show_repos: bool) -> None:
    tags, size = split.loads("tags"), split.loads("bytes")
    stdout_line(f"{'shard':>8}  {'repositories':>12}  {'tags':>8}" + (f"  {'bytes':>14}" if split.by_bytes else ""))
    for i in range(split.count):
        repos = sum(r.shard == i for r in split.repos)
        line = f"{Shard(i, split.count)!s:>8}  {repos:>12}  {tags[i]:>8}"
        stdout_line(line + (f"  {size[i]:>14}" if split.by_bytes else ""))
    text = f"balance (max/mean): tags {balance(tags):.2f}"
    if split.by_bytes:
        text += f", bytes {balance(size):.2f}"
    stdout_line(text + f"; weighed by {'bytes' if split.by_bytes else 'tag count'}")
    if show_repos:
        for r in sorted(split.repos, key=lambda r: (r.shard, r.spec.label, r.rel)):
            stdout_line(f"{r.shard}  {r.spec.label}/{r.rel}  {r.tags} tags")
