"""The `gcrsync` command: a thin click layer; each command lives in its own module.

Commands are imported only when they run (a lazy group): `gcrsync copy` should not pay for pydantic,
git or the sync package at start-up, since scheduled jobs start the process many times a day.
"""

from __future__ import annotations

import atexit
import gc
import importlib

import click

from gcrsync import __version__

COMMANDS = {
    "copy": "gcrsync.cli.copy:copy_command",
    "sync": "gcrsync.cli.sync:sync_command",
    "list": "gcrsync.cli.listing:list_command",
    "compare": "gcrsync.cli.compare:compare_command",
    "monitor": "gcrsync.cli.monitor:monitor_command",
    "catalog": "gcrsync.cli.catalog:catalog_command",
    "plan": "gcrsync.cli.plan:plan_command",
    "merge-reports": "gcrsync.cli.reports:merge_reports_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gcrsync")
@click.option("--debug", is_flag=True, help="Log every request (credentials are always redacted).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object per log line on stderr (for log collectors).")
def main(debug: bool, quiet: bool, log_format: str) -> None:
    """Mirror whole namespaces of container images between registries, with a git ledger."""
    from gcrsync.cli.common import setup_logging

    _exit_without_final_collections()
    setup_logging(debug=debug, quiet=quiet, json_lines=log_format == "json")


_registered: list[bool] = []


def _exit_without_final_collections() -> None:
    """Freeze the heap at exit, so the interpreter's shutdown skips its garbage collections over it.

    They took ~35 ms of a 0.35 s no-op run (bench/README.md). By the time exit handlers run, every file,
    socket and git process has been closed by its own `with` block; what the collections would reclaim is
    memory the process returns to the system anyway. `gc.freeze` runs as the last exit handler (they run
    newest first, and this is registered before any command starts), so logging still flushes after it.
    """
    if not _registered:
        atexit.register(gc.freeze)
        _registered.append(True)
