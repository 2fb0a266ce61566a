"""`gcrsync list`: the repositories, tags and digests under a source namespace, as discovered."""

from __future__ import annotations

import json
from typing import get_args

import click

from gcrsync.cli.common import registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import checked, credential_store, load, transport_options, user_namespace
from gcrsync.config import Discovery
from gcrsync.engine.plan import SourceSpec
from gcrsync.sync import Mirror, SyncOptions


@click.command("list")
@click.argument("namespace")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (registries).")
@click.option("--discovery", type=click.Choice(get_args(Discovery)),
              default="auto", show_default=True, help="How to enumerate repositories.")
@click.option("--repository", "repositories", multiple=True, help="With --discovery list: the repositories.")
@click.option("--query-jobs", type=int, default=8, show_default=True, help="Listing requests at once.")
@click.option("--timeout", type=float, help="Connect timeout in seconds.")
@click.option("--proxy", help="HTTP(S) proxy URL.")
@click.option("--src-creds", envvar="GCRSYNC_SRC_CREDS", help="USER:PASSWORD (prefer GCRSYNC_SRC_CREDS).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@run_async
async def list_command(namespace: str, config_path: str | None, discovery: Discovery,
                       repositories: tuple[str, ...], query_jobs: int, timeout: float | None, proxy: str | None,
                       src_creds: str | None, as_json: bool) -> None:
    """List repositories and tags (with digests where the registry gives them) under NAMESPACE.

    \b
    Examples:
      gcrsync list gcr.io/distroless
      gcrsync list localhost:5000/team --json
    """
    config = load(config_path)
    checked("--query-jobs", query_jobs, "query_jobs")
    checked("--timeout", timeout, "timeout")
    registry, ns = user_namespace(namespace)
    spec = SourceSpec(registry=registry, namespace=ns, target_prefix="unused.invalid/x", discovery=discovery,
                      repositories=list(repositories))
    creds = credential_store(config, src_creds=src_creds, sources=[spec])
    async with registry_client_for(config, transport_options(config, timeout=timeout, proxy=proxy),
                                   creds) as client:
        repos = await Mirror(client, [spec], SyncOptions(query_jobs=query_jobs)).discover(spec)
    if as_json:
        doc = {
            "namespace": namespace,
            "repositories": [
                {"repository": r.repository, "tags": {
                    t: {"digest": i.digest, "media_type": i.media_type, "size": i.size,
                        "pushed_at": i.pushed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if i.pushed_at else None}
                    for t, i in r.tags.items()}}
                for r in repos
            ],
        }
        stdout_line(json.dumps(doc, indent=2, sort_keys=True))
        return
    for repo in repos:
        for tag, info in repo.tags.items():
            stdout_line(f"{registry}/{repo.repository}:{tag}\t{info.digest or '-'}")
    stdout_line(f"{len(repos)} repositories, {sum(len(r.tags) for r in repos)} tags")
