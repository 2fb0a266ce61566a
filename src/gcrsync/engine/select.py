"""Tag selection: which of a repository's tags are mirrored.

Order of the filters: digest-tag drop, include, exclude, semver range, then latest-N. Ranges use npm
semantics through node-semver (`>=1.2 <2`, `^1.4`, `~1.2`, `1.x`, `a - b`, `||`), including npm's rule
that a pre-release (1.3.0-rc.1) only matches a range whose comparator names the same major.minor.patch
with a pre-release: mirrors usually want releases, and a user who wants rc tags writes `>=1.3.0-rc.0`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cmp_to_key
from typing import Any

from gcrsync.errors import ConfigError
from gcrsync.types import TagInfo

__all__ = ["TagPolicy", "is_digest_tag", "parse_tag_version", "select_tags"]

# Cosign / OCI referrers fallback tags: sha256-<hex> optionally followed by .sig/.att/.sbom/...
_DIGEST_TAG_RE = re.compile(r"(?:sha256-[a-f0-9]{64}|sha512-[a-f0-9]{64,128})(?:\.[A-Za-z0-9_-]+)*", re.ASCII)
# v1.2, 1.2.3, v1.2.3-rc.1: major.minor[.patch][-pre]. A bare "3" is a floating tag, not a version.
_TAG_VERSION_RE = re.compile(
    r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)


def is_digest_tag(tag: str) -> bool:
    return _DIGEST_TAG_RE.fullmatch(tag) is not None


def parse_tag_version(tag: str) -> Any | None:
    """The node-semver SemVer a tag denotes (1.2 → 1.2.0), or None for a tag that is not a version."""
    match = _TAG_VERSION_RE.fullmatch(tag)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    text = f"{major}.{minor}.{patch or 0}" + (f"-{pre}" if pre else "")
    import nodesemver  # type: ignore[import-untyped]  # only semver ranges and latest-N need it (start-up)

    try:
        return nodesemver.make_semver(text, False)
    except ValueError:  # e.g. a numeric pre-release identifier with a leading zero
        return None


def _compile(patterns: list[str], what: str) -> tuple[re.Pattern[str], ...]:
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"tag {what} pattern {pattern!r} is not a string")
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"invalid tag {what} regex {pattern!r}: {exc}") from None
    return tuple(compiled)


@dataclass(frozen=True)
class TagPolicy:
    """Regexes match the whole tag. Validated on construction: a bad pattern or range is a ConfigError."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    semver: str | None = None
    latest: int | None = None
    include_digest_tags: bool = False
    # Tags matching these never move once mirrored (release tags): a ledger entry is trusted without any
    # request, at the source or the target. `latest`-style tags stay checked every run.
    immutable: list[str] = field(default_factory=list)
    _include_re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _immutable_re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exclude_re: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _range: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: the compiled forms are cached through object.__setattr__.
        object.__setattr__(self, "_include_re", _compile(self.include, "include"))
        object.__setattr__(self, "_exclude_re", _compile(self.exclude, "exclude"))
        object.__setattr__(self, "_immutable_re", _compile(self.immutable, "immutable"))
        object.__setattr__(self, "_range", self._parse_range())
        if self.latest is not None and (isinstance(self.latest, bool) or self.latest < 1):
            raise ConfigError(f"tag policy 'latest' must be a positive integer, got {self.latest!r}")

    def _parse_range(self) -> Any:
        if self.semver is None:
            return None
        if not self.semver.strip():
            raise ConfigError("tag policy semver range is empty")
        import nodesemver  # only semver ranges and latest-N need it (start-up)

        try:
            return nodesemver.make_range(self.semver, False)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid semver range {self.semver!r}: {exc}") from None

    def is_immutable(self, tag: str) -> bool:
        return any(p.fullmatch(tag) for p in self._immutable_re)

    def wanted(self, tag: str) -> bool:
        """Every filter except latest-N."""
        if not self.include_digest_tags and is_digest_tag(tag):
            return False
        if self._include_re and not any(p.fullmatch(tag) for p in self._include_re):
            return False
        if any(p.fullmatch(tag) for p in self._exclude_re):
            return False
        if self._range is not None:
            version = parse_tag_version(tag)
            return version is not None and bool(self._range.test(version))
        return True


def _newest_first(tags: list[str], infos: Mapping[str, TagInfo]) -> list[str]:
    """Newest first: by push time when every candidate has one, else by version (non-versions last)."""
    import nodesemver  # only semver ranges and latest-N need it (start-up)

    versions = {tag: parse_tag_version(tag) for tag in tags}

    def by_version(a: str, b: str) -> int:
        va, vb = versions[a], versions[b]
        if va is not None and vb is not None:
            order = int(nodesemver.compare(vb, va, False))
            if order:
                return order
        elif va is not None or vb is not None:
            return -1 if va is not None else 1
        return (b > a) - (b < a)  # lexical, descending: date-like tags sort newest first

    ordered = sorted(tags, key=cmp_to_key(by_version))
    pushed = [infos[tag].pushed_at for tag in tags]
    if all(isinstance(when, datetime) for when in pushed):
        # Stable sort on top of the version order, so equal push times fall back to it.
        ordered.sort(key=lambda tag: _timestamp(infos[tag].pushed_at), reverse=True)
    return ordered


def _timestamp(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def select_tags(tags: Mapping[str, TagInfo], policy: TagPolicy) -> list[str]:
    """The tags to mirror, sorted by name."""
    candidates = [tag for tag in tags if policy.wanted(tag)]
    if policy.latest is not None:
        candidates = _newest_first(candidates, tags)[: policy.latest]
    return sorted(candidates)
