"""The `gcrsync` command: a thin click layer; each command lives in its own module."""

from __future__ import annotations

import click

from gcrsync import __version__
from gcrsync.cli.common import setup_logging
from gcrsync.cli.compare import compare_command
from gcrsync.cli.copy import copy_command
from gcrsync.cli.listing import list_command
from gcrsync.cli.monitor import monitor_command
from gcrsync.cli.sync import sync_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gcrsync")
@click.option("--debug", is_flag=True, help="Log every request (credentials are always redacted).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(debug: bool, quiet: bool) -> None:
    """Mirror whole namespaces of container images between registries, with a git ledger."""
    setup_logging(debug=debug, quiet=quiet)


main.add_command(copy_command)
main.add_command(sync_command)
main.add_command(list_command)
main.add_command(compare_command)
main.add_command(monitor_command)
