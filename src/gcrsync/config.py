"""The YAML configuration (`gcrsync sync -c gcrsync.yaml`), validated with line-aware errors.

PyYAML's safe_load gives the data; its node tree (compose) gives line numbers, so a pydantic error at
`sync.1.tags.latest` is reported as `gcrsync.yaml:14: sync[1].tags.latest: ...`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gcrsync.errors import ConfigError
from gcrsync.secretfiles import check_permissions

if TYPE_CHECKING:
    import yaml

Naming = str  # "flatten" | "preserve" | "prefix" | a template with {registry} {namespace} {path} {name}
Discovery = Literal["auto", "gcr", "catalog", "dockerhub", "quay", "ghcr", "list"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagsConfig(_Model):
    include: list[str] = Field(default_factory=list, description="full-match regexes; empty = all tags")
    exclude: list[str] = Field(default_factory=list)
    semver: str | None = None
    latest: int | None = Field(default=None, ge=1)
    include_digest_tags: bool = False
    immutable: list[str] = Field(default_factory=list, description="tags that never move once mirrored")

    @field_validator("include", "exclude", "immutable")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:  # deep groups, a{99999999999}
                raise ValueError(f"invalid regex {pattern[:60]!r}: {exc}") from None
        return value


class RegistryConfig(_Model):
    username_env: str | None = Field(default=None, description="name of the env var holding the user")
    password_env: str | None = Field(default=None, description="name of the env var holding the password")
    username: str | None = None
    password: str | None = None  # allowed, but the file is then checked for world-readability
    insecure: bool = False  # HTTPS without certificate verification
    plain_http: bool | None = None  # plain HTTP; default: only loopback hosts
    requests_per_second: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    chunked_upload: bool = False
    api: str | None = Field(default=None, description="web API base URL for discovery (Hub, quay, GitHub)")
    token_env: str | None = Field(default=None, description="env var holding an API token (GitHub)")
    # How this registry is listed when `auto` cannot tell by its name (a source's default method, and
    # what a target's plan may use: a listing with digests spares a HEAD per target tag).
    discovery: Discovery | None = None

    @field_validator("api")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError(f"api must be an http(s) URL without credentials or query, got {value[:80]!r}")
        return value.rstrip("/") if value else value


class ArtifactTypesConfig(_Model):
    include: list[str] = Field(default_factory=list, description="shell patterns on artifactType; empty = all")
    exclude: list[str] = Field(default_factory=list)


class MaxRemoved:
    """The removal guard's limit (`max_removed`): a count of ledger entries, or a percentage like "25%".

    Shared by the config file and `--max-removed`, so both accept and refuse exactly the same values.
    """

    def __init__(self, value: int | str) -> None:
        self.text = str(value).strip()
        self.count: int | None = None
        self.percent: float | None = None
        if isinstance(value, bool):
            raise ValueError("must be a count (e.g. 10) or a percentage (e.g. 25%)")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", self.text)
        if m:
            self.percent = float(m.group(1))
            if self.percent > 100:
                raise ValueError(f"{self.text!r}: a percentage is at most 100%")
        elif re.fullmatch(r"\d+", self.text):
            self.count = int(self.text)
        else:
            raise ValueError(f"{self.text[:40]!r} is not a count (e.g. 10) or a percentage (e.g. 25%)")

    @property
    def everything(self) -> bool:
        """100%: the user accepts that a whole namespace or repository may go."""
        return self.percent == 100

    def allows(self, removed: int, total: int) -> bool:
        """May a run record `removed` of a namespace's `total` ledger entries as removed upstream?"""
        if removed == 0:
            return True
        if removed >= total and not self.everything:
            return False  # never all of a non-empty namespace, unless 100% says so
        if self.count is not None:
            return removed <= self.count
        assert self.percent is not None
        return removed * 100 <= self.percent * total


class VerifyEvery:
    """How often a run verifies the target fully (a HEAD per tag) instead of by presence in its tag lists
    (`verify_target_every`): every N-th run (`7`), or when the last full verification is older than a
    duration (`7d`, `12h`, `90m`). `1` verifies on every run. Shared by the config and the command line."""

    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, value: int | str) -> None:
        self.text = str(value).strip()
        self.runs: int | None = None
        self.seconds: float | None = None
        m = re.fullmatch(r"(\d+)([smhd])", self.text)
        if isinstance(value, bool) or not (m or re.fullmatch(r"\d+", self.text)):
            raise ValueError(f"{self.text[:40]!r} is not a number of runs (e.g. 7) or a duration (e.g. 7d)")
        if m:
            self.seconds = int(m.group(1)) * self.UNITS[m.group(2)]
        else:
            self.runs = int(self.text)
        if not (self.runs or self.seconds):
            raise ValueError(f"{self.text!r}: must be at least 1 run or a positive duration")

    def due(self, runs_since: int, seconds_since: float) -> bool:
        """Is a full verification due, `runs_since` cheap runs and `seconds_since` after the last one?"""
        if self.runs is not None:
            return runs_since + 1 >= self.runs
        assert self.seconds is not None
        return seconds_since >= self.seconds


class Defaults(_Model):
    jobs: int = Field(default=4, ge=1, le=64)
    query_jobs: int = Field(default=8, ge=1, le=128)
    naming: Naming = "flatten"
    platforms: list[str] = Field(default_factory=list)
    tags: TagsConfig = Field(default_factory=TagsConfig)
    trust_ledger: bool = False
    prune: bool = False
    timeout: float = Field(default=10.0, gt=0)
    referrers: bool = True  # mirror the signatures, attestations and SBOMs attached to mirrored images
    artifact_types: ArtifactTypesConfig = Field(default_factory=ArtifactTypesConfig)
    max_removed: int | str = Field(default="25%", description="removal guard: a count or a percentage")
    verify_target_every: int | str = Field(default=7, description="full target verification: runs or a duration")

    @field_validator("verify_target_every", mode="before")
    @classmethod
    def _verify_every(cls, value: Any) -> Any:
        if not isinstance(value, int | str):
            raise ValueError("must be a number of runs (e.g. 7) or a duration (e.g. 7d)")
        VerifyEvery(value)
        return value

    @field_validator("max_removed", mode="before")
    @classmethod
    def _max_removed(cls, value: Any) -> Any:
        if not isinstance(value, int | str):
            raise ValueError("must be a count (e.g. 10) or a percentage (e.g. 25%)")
        MaxRemoved(value)
        return value


class SyncEntry(_Model):
    source: str
    discovery: Discovery = "auto"
    repositories: list[str] = Field(default_factory=list)
    tags: TagsConfig | None = None
    naming: Naming | None = None
    platforms: list[str] | None = None
    target: str | None = None
    referrers: bool | None = None
    artifact_types: ArtifactTypesConfig | None = None


class MetadataConfig(_Model):
    location: str | None = None
    branch: str | None = None
    author_name: str = "gcrsync"
    author_email: str = "gcrsync@localhost"
    message: str = "gcrsync: mirror update"
    username_env: str | None = None
    token_env: str | None = None


class Config(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    registries: dict[str, RegistryConfig] = Field(default_factory=dict)
    target: str | None = None
    sync: list[SyncEntry] = Field(default_factory=list)
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    proxy: str | None = None


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line number."""
    import yaml  # only a config file needs the YAML parser: commands without one start faster

    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _loc_text(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        text = " ".join(str(part).split())[:40]  # keys come from the file: keep the message one short line
        out += f"[{part}]" if isinstance(part, int) else (f".{text}" if out else text)
    return out


def parse_config(text: str, name: str = "<config>") -> Config:
    import yaml  # only a config file needs the YAML parser: commands without one start faster

    try:
        data: Any = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{name}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # PyYAML's own constructors raise these for values like `2001-02-30`, `!!bool maybe`, `!!timestamp x`.
        raise ConfigError(f"{name}: invalid YAML: a value cannot be read ({type(exc).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(tree, loc)
        where = f"{name}:{line}" if line else name
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {_loc_text(loc) or 'config'}: {err['msg']}{more}") from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    config = parse_config(text, str(path))
    if any(r.password for r in config.registries.values()):
        check_permissions(path)
    return config


def env_value(name: str | None) -> str | None:
    return os.environ.get(name) if name else None
