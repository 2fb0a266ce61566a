"""What every command shares: logging, error handling, progress output and the run's registry client."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from gcrsync.errors import GcrsyncError
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from gcrsync.config import Config

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("gcrsync")
_console: list[Console] = []


def stderr_is_terminal() -> bool:
    """Progress bars and rich log lines only on a terminal; rich is not even imported otherwise (start-up)."""
    return sys.stderr.isatty()


def stderr_console() -> Console:
    """The one rich Console on stderr (log handler and progress bars share it, so lines print above bars)."""
    if not _console:
        from rich.console import Console

        _console.append(Console(stderr=True))
    return _console[0]


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (test runners and pipes swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors of unattended runs."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        return json.dumps({"time": when, "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage()}, ensure_ascii=False)


def setup_logging(*, debug: bool = False, quiet: bool = False, json_lines: bool = False) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("gcrsync")
    for old in list(root.handlers):
        if getattr(old, "gcrsync_cli", False):
            root.removeHandler(old)
    if json_lines:
        handler: logging.Handler = _CurrentStderr()
        handler.setFormatter(JsonFormatter())
    elif stderr_is_terminal():
        from rich.logging import RichHandler

        handler = RichHandler(console=stderr_console(), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.gcrsync_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body; turn our errors into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(func(*args, **kwargs))
        except GcrsyncError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except OSError as exc:  # a file we were told to write (report, metrics) cannot be: one line, no traceback
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"error:{where}: {one_line(exc.strerror or str(exc))}", err=True)
            raise SystemExit(1) from None

    return wrapper


def one_line(text: str) -> str:
    return " ".join(text.split())[:1000]


@asynccontextmanager
async def registry_client_for(
    config: Config | None, options: TransportOptions, credentials: CredentialStore
) -> AsyncIterator[RegistryClient]:
    """The run's client with the config's per-registry upload settings (None: no config file)."""
    registries = config.registries if config is not None else {}
    chunked = [host for host, reg in registries.items() if reg.chunked_upload]
    apis = {host: reg.api for host, reg in registries.items() if reg.api}
    methods = {host: reg.discovery for host, reg in registries.items() if reg.discovery}
    async with Transport(options) as transport:
        yield RegistryClient(transport, credentials, chunked_hosts=chunked, apis=apis, methods=methods)


class ByteProgress:
    """A rich progress bar (bytes, speed, ETA) on a terminal; nothing otherwise (log lines suffice)."""

    def __init__(self, description: str, total: int | None = None) -> None:
        self.enabled = stderr_is_terminal()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.description = description
        self.total = total

    def __enter__(self) -> ByteProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def add_total(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[0]
            self._progress.update(self._task, total=(task.total or 0) + n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def stdout_line(text: str) -> None:
    """Results go to stdout (scripts read them); logs and progress go to stderr."""
    click.echo(text)
