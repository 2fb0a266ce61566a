"""Turn the config file and command-line options into the objects a run needs (shared by every command).

The config model (pydantic, PyYAML) and the metadata repository are imported where they are needed, not
here: `gcrsync copy` without `-c` needs neither, and start-up time matters for scheduled jobs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gcrsync.engine.artifacts import ArtifactPolicy
from gcrsync.engine.naming import validate_mode
from gcrsync.errors import ConfigError, InvalidReference, ManifestError
from gcrsync.oci import Platform
from gcrsync.reference import split_namespace
from gcrsync.registry.credentials import Credential, CredentialStore
from gcrsync.registry.transport import HostPolicy, TransportOptions

if TYPE_CHECKING:
    from pydantic import BaseModel

    from gcrsync.config import Config, Discovery, MetadataConfig, RegistryConfig, SyncEntry, TagsConfig
    from gcrsync.engine.plan import SourceSpec
    from gcrsync.engine.select import TagPolicy
    from gcrsync.ledger import MetadataRepo

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0  # seconds; the config's `defaults.timeout` (tests/test_options.py checks they agree)


def checked(option: str, value: T | None, setting: str, model: type[BaseModel] | None = None) -> T | None:
    """A command-line value checked by the config model's own rule for the same setting, so an option and
    the config file accept and refuse the same values (`--jobs 0` like `jobs: 0`), in one line."""
    if value is None:
        return None
    from pydantic import ValidationError

    from gcrsync.config import Defaults

    model = model or Defaults
    try:
        model.model_validate({setting: value})
    except ValidationError as exc:
        shown = "" if isinstance(value, list) else f" {str(value)[:60]!r}"  # a list's message names the item
        raise ConfigError(f"{option}{shown}: {exc.errors()[0]['msg']}") from None
    return value


def parse_duration(text: str, option: str = "duration") -> float:
    """`90`, `90s`, `5m`, `24h`, `1d`, `1h30m` → seconds; never zero (`--every 0` would loop without a pause)."""
    total = 0.0
    pos = 0
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text) and float(text) > 0:
        return float(text)
    for m in re.finditer(r"(\d+(?:\.\d+)?)([smhd])", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        pos = m.end()
    if pos != len(text) or total <= 0:
        raise ConfigError(f"{option}: invalid duration {text[:40]!r}: use a positive time, e.g. 90s, 5m, 24h")
    return total


def user_namespace(text: str) -> tuple[str, str]:
    """split_namespace for what the user typed or configured: a bad one is bad usage (exit 2)."""
    try:
        return split_namespace(text)
    except InvalidReference as exc:
        raise ConfigError(str(exc)) from None


def user_platforms(texts: list[str] | tuple[str, ...]) -> list[Platform]:
    """`--platform` / `platforms:` values; a malformed one is bad usage (exit 2)."""
    try:
        return [Platform.parse(p) for p in texts]
    except ManifestError as exc:
        raise ConfigError(str(exc)) from None


def parse_creds(text: str | None, what: str) -> Credential | None:
    """`user:password` from an option or env var (never echoed)."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ConfigError(f"{what} must look like USER:PASSWORD")
    return Credential(username=user, password=password)


def load(config_path: str | None) -> Config:
    from gcrsync.config import Config, load_config

    return load_config(Path(config_path)) if config_path else Config()


def load_if_given(config_path: str | None) -> Config | None:
    """The config file, or None without one (a command that only needs its `registries:` starts faster)."""
    return load(config_path) if config_path else None


def _policy(tags: TagsConfig) -> TagPolicy:
    from gcrsync.engine.select import TagPolicy

    return TagPolicy(include=list(tags.include), exclude=list(tags.exclude), semver=tags.semver,
                     latest=tags.latest, include_digest_tags=tags.include_digest_tags,
                     immutable=list(tags.immutable))


def source_specs(config: Config, *, namespaces: tuple[str, ...] = (), dest: str | None = None,
                 naming: str | None = None, platforms: tuple[str, ...] = (),
                 tags: TagsConfig | None = None, discovery: Discovery | None = None,
                 referrers: bool | None = None) -> list[SourceSpec]:
    """One SourceSpec per `sync:` entry, or per SOURCE_NAMESPACE argument (the quick form)."""
    from gcrsync.config import SyncEntry
    from gcrsync.engine.plan import SourceSpec  # imported here: `gcrsync copy` plans nothing

    entries = list(config.sync)
    if namespaces:
        entries = [SyncEntry(source=ns) for ns in namespaces]
    if not entries:
        raise ConfigError("nothing to sync: give SOURCE_NAMESPACE arguments or a config with a `sync:` list")
    specs = []
    for entry in entries:
        target = dest or entry.target or config.target
        if not target:
            raise ConfigError(f"no target for {entry.source}: give --dest or `target:` in the config")
        registry, namespace = user_namespace(entry.source)
        mode = naming or entry.naming or config.defaults.naming
        validate_mode(mode)
        plats = list(platforms) or (entry.platforms if entry.platforms is not None else config.defaults.platforms)
        specs.append(SourceSpec(
            registry=registry,
            namespace=namespace,
            target_prefix=_normalise_target(target),
            naming=mode,
            policy=_policy(tags or entry.tags or config.defaults.tags),
            platforms=user_platforms(plats),
            discovery=discovery or entry.discovery,
            repositories=list(entry.repositories),
            artifacts=_artifact_policy(config, entry, referrers),
        ))
    return specs


def _artifact_policy(config: Config, entry: SyncEntry, referrers: bool | None) -> ArtifactPolicy:
    """`--no-referrers`, else the entry's `referrers:`/`artifact_types:`, else the defaults'."""
    enabled = referrers if referrers is not None else (
        entry.referrers if entry.referrers is not None else config.defaults.referrers)
    types = entry.artifact_types or config.defaults.artifact_types
    return ArtifactPolicy(enabled=enabled, include=list(types.include), exclude=list(types.exclude))


def _normalise_target(target: str) -> str:
    if target.startswith("oci:"):
        if not target[4:].strip():
            raise ConfigError(f"target {target!r}: give the layout directory, e.g. oci:./mirror")
        return "oci:" + str(Path(target[4:]).resolve())
    registry, namespace = user_namespace(target)
    return f"{registry}/{namespace}" if namespace else registry


def credential_store(config: Config | None, *, src_creds: str | None = None, dest_creds: str | None = None,
                     sources: list[SourceSpec] | None = None,
                     overrides: dict[str, Credential] | None = None) -> CredentialStore:
    """Per host: command-line credentials, then the config's `registries:`, then the Docker config."""
    given = dict(overrides or {})
    overrides = {}
    env: dict[str, tuple[str, str]] = {}
    for host, reg in (config.registries if config is not None else {}).items():
        cred = _registry_credential(host, reg)
        if cred is not None:
            overrides[host] = cred
    for spec in sources or []:
        src = parse_creds(src_creds, "--src-creds")
        if src is not None:
            overrides[spec.registry] = src
        dst = parse_creds(dest_creds, "--dest-creds")
        if dst is not None and not spec.target_prefix.startswith("oci:"):
            overrides[spec.target_prefix.split("/", 1)[0]] = dst
    overrides.update(given)
    return CredentialStore(overrides, env)


def _registry_credential(host: str, reg: RegistryConfig) -> Credential | None:
    from gcrsync.config import env_value

    user = reg.username or env_value(reg.username_env)
    password = reg.password or env_value(reg.password_env)
    if reg.password_env and password is None:
        raise ConfigError(f"registries.{host}.password_env: environment variable {reg.password_env} is not set")
    if password is None and reg.token_env:
        password = env_value(reg.token_env)  # a token (GitHub) is a password to the registry and the API
        if password is None:
            raise ConfigError(f"registries.{host}.token_env: environment variable {reg.token_env} is not set")
        user = user or "token"
    if user is None and password is None:
        return None
    return Credential(username=user, password=password)


def transport_options(config: Config | None, *, timeout: float | None = None,
                      proxy: str | None = None) -> TransportOptions:
    policies = {
        host: HostPolicy(insecure=reg.insecure, plain_http=reg.plain_http, requests_per_second=reg.requests_per_second,
                         max_concurrency=reg.max_concurrency)
        for host, reg in (config.registries if config is not None else {}).items()
    }
    connect = timeout or (config.defaults.timeout if config is not None else DEFAULT_TIMEOUT)
    # The idle-read timeout is what --timeout's help and the README say: 6x the connect timeout.
    return TransportOptions(connect_timeout=connect, read_timeout=connect * 6,
                            proxy=proxy or (config.proxy if config is not None else None), host_policies=policies)


def open_metadata(meta: MetadataConfig, location: str | None, *, clone_group: str | None = None) -> MetadataRepo:
    """The metadata repository: --metadata, else `metadata.location`, else the user's data directory.

    `clone_group` keeps a separate clone of a remote (e.g. per shard), so that shards running on one machine
    do not wait for each other's lock on a shared clone."""
    from gcrsync.config import env_value
    from gcrsync.ledger import MetadataRepo

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gcrsync" / "metadata"
    if clone_group:
        cache = cache / clone_group
    token = env_value(meta.token_env) or os.environ.get("GCRSYNC_GIT_TOKEN")
    username = env_value(meta.username_env) or os.environ.get("GCRSYNC_GIT_USERNAME")
    where = location or meta.location
    try:
        return MetadataRepo.open(where, cache, token=token, username=username,
                                 author_name=meta.author_name, author_email=meta.author_email, branch=meta.branch)
    except OSError as exc:  # e.g. a path under a file: bad input, one line, not a traceback
        raise ConfigError(f"metadata location {where or cache}: {exc.strerror or exc}") from None
