"""`gcrsync catalog`: regenerate the metadata repository's README section, catalog.json/.js and index.html.

Every sync refreshes them already; this is for after an upgrade that changed their format, or a repository
whose ledgers were written by hand or by `compare --write`. No registry is contacted.
"""

from __future__ import annotations

import json

import click

from gcrsync.cli.common import run_async, stdout_line
from gcrsync.cli.settings import load, open_metadata
from gcrsync.errors import LedgerError
from gcrsync.ledger.catalogfiles import CATALOG_JSON


@click.command("catalog")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (metadata:).")
@click.option("--metadata", help="Metadata repo: a directory, a git work tree or a git URL "
              "(default: the config's metadata.location, else a git repo in the user's data directory).")
@click.option("--message", help="Commit message (default: the config's metadata.message + a note).")
@run_async
async def catalog_command(config_path: str | None, metadata: str | None, message: str | None) -> None:
    """Regenerate README.md, catalog.json, catalog.js and index.html from the ledgers, commit and push.

    The README keeps everything outside its gcrsync markers. The last recorded run (time, failures) is
    kept from the existing catalog.json: this is not a sync run.

    \b
    Examples:
      gcrsync catalog --metadata https://github.com/me/gcr-mirror.git
      gcrsync catalog -c gcrsync.yaml
    """
    config = load(config_path)
    repo = open_metadata(config.metadata, metadata)
    try:
        with repo.lock():
            commit = repo.publish(message or config.metadata.message + " (catalog regenerated)")
            try:
                summary = json.loads((repo.workdir / CATALOG_JSON).read_text(encoding="utf-8"))["summary"]
            except (OSError, ValueError, KeyError, TypeError):
                raise LedgerError("the catalog files could not be written (see the error above)") from None
            written = sorted(p.relative_to(repo.workdir).as_posix() for p in repo.generated)
    finally:
        repo.close()
    stdout_line(f"catalog: {summary['namespaces']} namespaces, {summary['repositories']} repositories, "
                f"{summary['tags']} tags; {'rewrote ' + ', '.join(written) if written else 'no file changed'}"
                f"{f'; commit {commit[:12]}' if commit else ''}")
