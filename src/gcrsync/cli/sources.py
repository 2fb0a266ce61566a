"""The options every namespace command shares (sync, compare, monitor), gathered into one object.

Commands receive a `SourceArgs` instead of eighteen keyword arguments, and turn it into the config,
the SourceSpecs, the credential store and the transport options in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, get_args

import click

from gcrsync.cli.settings import checked, credential_store, load, source_specs, transport_options
from gcrsync.config import Config, Discovery, TagsConfig
from gcrsync.engine.plan import SourceSpec
from gcrsync.errors import ConfigError
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import TransportOptions


@dataclass
class SourceArgs:
    namespaces: tuple[str, ...]
    config_path: str | None
    dest: str | None
    naming: str | None
    platforms: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    semver: str | None
    latest: int | None
    immutable: tuple[str, ...]
    query_jobs: int | None
    timeout: float | None
    proxy: str | None
    src_creds: str | None
    dest_creds: str | None
    user: str | None
    password: str | None
    metadata: str | None
    discovery: Discovery | None
    referrers: bool | None

    @cached_property
    def config(self) -> Config:
        return load(self.config_path)

    def tags(self) -> TagsConfig | None:
        """Tag options given on the command line replace the config's tag policy."""
        if not (self.include or self.exclude or self.semver or self.latest is not None or self.immutable):
            return None
        given = {"include": list(self.include), "exclude": list(self.exclude), "semver": self.semver,
                 "latest": self.latest, "immutable": list(self.immutable)}
        for name, value in given.items():  # checked like the config's `tags:`, named as the option
            checked(f"--{name}", value, name, TagsConfig)
        return TagsConfig.model_validate(given)

    @cached_property
    def specs(self) -> list[SourceSpec]:
        return source_specs(self.config, namespaces=self.namespaces, dest=self.dest, naming=self.naming,
                            platforms=self.platforms, tags=self.tags(), discovery=self.discovery,
                            referrers=self.referrers)

    def credentials(self) -> CredentialStore:
        return credential_store(self.config, src_creds=self.src_creds, dest_creds=self._dest_creds(),
                                sources=self.specs)

    def _dest_creds(self) -> str | None:
        """--user/--password (the original tool's flags) are another spelling of --dest-creds."""
        if self.dest_creds or not self.user:
            return self.dest_creds
        if not self.password:
            raise ConfigError("--user needs a password: set GCRSYNC_PASSWORD (or --password)")
        return f"{self.user}:{self.password}"

    def transport(self) -> TransportOptions:
        return transport_options(self.config, timeout=checked("--timeout", self.timeout, "timeout"),
                                 proxy=self.proxy)

    @property
    def query_limit(self) -> int:
        query_jobs = checked("--query-jobs", self.query_jobs, "query_jobs")
        return self.config.defaults.query_jobs if query_jobs is None else query_jobs


_OPTIONS = [
    click.argument("namespaces", nargs=-1),
    click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file."),
    click.option("--dest", help="Target prefix: registry/namespace (e.g. docker.io/gcrxio) or oci:DIR."),
    click.option("--naming", help="flatten (default) | preserve | prefix | a template like '{name}'."),
    click.option("--platform", "platforms", multiple=True, help="Only these platforms (repeatable)."),
    click.option("--include", multiple=True, help="Only tags fully matching this regex (repeatable)."),
    click.option("--exclude", multiple=True, help="Skip tags fully matching this regex (repeatable)."),
    click.option("--semver", help="Only tags in this semver range, e.g. '>=1.2 <2'."),
    click.option("--latest", type=int, help="Only the newest N tags per repository."),
    click.option("--immutable", multiple=True, help="Tags fully matching this regex never move once mirrored: "
                 "no request is made for them (repeatable, e.g. 'v\\d+\\.\\d+\\.\\d+')."),
    click.option("--query-jobs", type=int, help="Listing/HEAD requests at once (the original's querylimit)."),
    click.option("--timeout", type=float, help="Connect timeout in seconds (the original's httptimeout)."),
    click.option("--proxy", help="HTTP(S) proxy URL for registry traffic."),
    click.option("--src-creds", envvar="GCRSYNC_SRC_CREDS", help="USER:PASSWORD for the sources "
                 "(prefer the GCRSYNC_SRC_CREDS env var: arguments are visible to other processes)."),
    click.option("--dest-creds", envvar="GCRSYNC_DEST_CREDS", help="USER:PASSWORD for the target "
                 "(prefer GCRSYNC_DEST_CREDS)."),
    click.option("--user", help="Target registry user (the original's --user; password from GCRSYNC_PASSWORD)."),
    click.option("--password", envvar="GCRSYNC_PASSWORD", help="Target registry password (prefer the "
                 "GCRSYNC_PASSWORD env var)."),
    click.option("--metadata", help="Metadata repo: a directory, a git work tree or a git URL "
                 "(default: a git repo in the user's data directory)."),
    click.option("--discovery", type=click.Choice(get_args(Discovery)), help="How to list the namespaces "
                 "(default: auto, by registry host; see the README)."),
    click.option("--referrers/--no-referrers", default=None, help="Mirror the signatures, attestations and "
                 "SBOMs attached to mirrored images (default: on, or the config's `referrers:`)."),
]
_FIELDS = [f.name for f in fields(SourceArgs)]


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options; the command receives them as its first argument, a SourceArgs."""

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        args = SourceArgs(**{name: kwargs.pop(name) for name in _FIELDS})
        return func(args, **kwargs)

    command: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
