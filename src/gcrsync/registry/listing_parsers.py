"""Strict parsers for the listing APIs used by discovery (pure functions, no I/O).

Every body comes from a server we do not control. A listing that cannot be understood must fail the
namespace loudly: the original gcrsync turned an unreadable listing into "zero tags" and then skipped or
re-pushed whole repositories. So every parser checks types and raises DiscoveryError naming the URL and
what is wrong, never returning a silently shortened list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from gcrsync.errors import InvalidReference, ManifestError, RegistryError
from gcrsync.oci import validate_digest
from gcrsync.reference import validate_repository, validate_tag
from gcrsync.types import TagInfo


class DiscoveryError(RegistryError):
    """A listing response is malformed, inconsistent or points somewhere it must not."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_valid_repository(name: str) -> bool:
    """True if name is a repository path (no host) that any OCI registry accepts."""
    try:
        validate_repository(name)
    except InvalidReference:
        return False
    return True


def is_valid_component(name: str) -> bool:
    """One path component: Docker Hub and Quay repository names, GCR `child` entries."""
    return "/" not in name and is_valid_repository(name)


def describe(url: str) -> str:
    """host/path?query of a URL for error messages (auth never lives in our URLs, but userinfo is dropped)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{parts.path}{query}"


def fail(url: str, what: str) -> DiscoveryError:
    return DiscoveryError(f"listing {describe(url)}: {what}")


def check_repository(url: str, name: object) -> str:
    """The name if it is a valid repository path; the length cap also bounds the gcr `child` recursion."""
    if not isinstance(name, str):
        raise fail(url, f"invalid repository name {str(name)[:120]!r}: not a string")
    try:
        return validate_repository(name)
    except InvalidReference as exc:
        raise fail(url, str(exc)) from None


def check_tag(url: str, tag: object) -> str:
    if not isinstance(tag, str):
        raise fail(url, f"invalid tag {str(tag)[:140]!r}: not a string")
    try:
        return validate_tag(tag)
    except InvalidReference as exc:
        raise fail(url, str(exc)) from None


def _object(url: str, body: object, what: str = "body") -> Mapping[str, object]:
    if not isinstance(body, Mapping):
        raise fail(url, f"{what} is not a JSON object (got {type(body).__name__})")
    return body


def _list(url: str, value: object, what: str, *, null_ok: bool = False) -> list[object]:
    if value is None and null_ok:
        return []
    if not isinstance(value, list):
        raise fail(url, f"{what} is not a list (got {type(value).__name__})")
    return value


def _optional_str(url: str, value: object, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail(url, f"{what} is not a string")
    return value


def _digest(url: str, value: object, what: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return validate_digest(value, what)
    except ManifestError as exc:
        raise fail(url, str(exc)) from None


def _count(url: str, value: object, what: str) -> int | None:
    """A non-negative integer sent as a JSON number or as a decimal string (GCR strings, AR ints)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise fail(url, f"{what} is not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 20:
        number = int(value)
    else:
        raise fail(url, f"{what} is not a non-negative integer: {str(value)[:40]!r}")
    if number < 0:
        raise fail(url, f"{what} is negative")
    return number


def _epoch(url: str, value: object, what: str, *, scale: int) -> datetime | None:
    """Epoch time (seconds / scale) as an aware UTC datetime; 0 means "unknown" (ko/distroless set it)."""
    count = _count(url, value, what)
    if not count:
        return None
    try:
        # Integer arithmetic: a float division would round some milliseconds off.
        return _EPOCH + timedelta(microseconds=count * (1_000_000 // scale))
    except (OverflowError, OSError, ValueError):
        raise fail(url, f"{what} is out of range: {count}") from None


def _flag(url: str, value: object, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(url, f"{what} is not a boolean")
    return value


def _iso_time(url: str, value: object, what: str) -> datetime | None:
    text = _optional_str(url, value, what)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise fail(url, f"{what} is not an ISO 8601 time: {text[:40]!r}") from None


def _rfc2822_time(url: str, value: object, what: str) -> datetime | None:
    text = _optional_str(url, value, what)
    if text is None:
        return None
    try:
        parsed = parsedate_to_datetime(text)
        # "-0000" means "UTC, zone unknown" and yields a naive datetime.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: zone offsets of 30 digits
        raise fail(url, f"{what} is not an RFC 2822 date: {text[:40]!r}") from None


# --- OCI distribution (/v2/_catalog, /v2/<name>/tags/list, GCR/AR extension) --------------------------


@dataclass
class TagsListPage:
    name: str | None
    tags: dict[str, TagInfo]
    children: list[str]
    listed_tags: int = 0  # entries of 'tags' as sent (a list at a registry's silent cap is suspect)
    listed_manifests: int = 0  # entries of the GCR 'manifest' map


def parse_tags_list(url: str, body: object) -> TagsListPage:
    """/v2/<name>/tags/list, including the GCR / Artifact Registry `child` and `manifest` extension.

    A node may have both tags and children (both are kept). A tag named in `tags` but missing from
    `manifest` keeps digest None; a tag only under `manifest` is still a tag.
    """
    doc = _object(url, body)
    name = _optional_str(url, doc.get("name"), "'name'")
    tags: dict[str, TagInfo] = {}
    listed = _list(url, doc.get("tags"), "'tags'", null_ok=True)
    for tag in listed:
        tags[check_tag(url, tag)] = TagInfo()
    children: list[str] = []
    for child in _list(url, doc.get("child"), "'child'", null_ok=True):
        if not isinstance(child, str) or not is_valid_component(child):
            raise fail(url, f"invalid child repository name {str(child)[:120]!r}")
        children.append(child)
    manifests = doc.get("manifest")
    manifest_map = _object(url, manifests, "'manifest'") if manifests is not None else {}
    if manifests is not None:
        seen: dict[str, str] = {}
        for digest, entry in manifest_map.items():
            try:
                checked = validate_digest(digest, "manifest key")
            except ManifestError as exc:
                raise fail(url, str(exc)) from None
            info = _object(url, entry, f"manifest {digest[:80]!r}")
            what = f"manifest {digest[:19]}…"
            template = TagInfo(
                digest=checked,
                media_type=_optional_str(url, info.get("mediaType"), f"{what} mediaType"),
                # Upload time is when the tag appeared; timeCreatedMs is the image's own (often zeroed)
                # creation time, used only when the upload time is missing.
                pushed_at=_epoch(url, info.get("timeUploadedMs"), f"{what} timeUploadedMs", scale=1000)
                or _epoch(url, info.get("timeCreatedMs"), f"{what} timeCreatedMs", scale=1000),
                size=_count(url, info.get("imageSizeBytes"), f"{what} imageSizeBytes"),
            )
            for tag in _list(url, info.get("tag"), f"{what} 'tag'", null_ok=True):
                tag_name = check_tag(url, tag)
                if tag_name in seen and seen[tag_name] != checked:
                    raise fail(url, f"tag {tag_name!r} is listed under two digests")
                seen[tag_name] = checked
                tags[tag_name] = replace(template)
    return TagsListPage(name=name, tags=tags, children=children, listed_tags=len(listed),
                        listed_manifests=len(manifest_map))


def parse_catalog(url: str, body: object) -> list[str]:
    doc = _object(url, body)
    names = _list(url, doc.get("repositories"), "'repositories'", null_ok=True)
    return [check_repository(url, name) for name in names]


_LINK_PART_RE = re.compile(r"\s*<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL_NEXT_RE = re.compile(r"""(?:^|;)\s*rel\s*=\s*"?([^";]*)"?""", re.IGNORECASE)


def next_link(url: str, headers: Mapping[str, str]) -> str | None:
    """The absolute rel="next" target of an RFC 8288 Link header, resolved against url.

    The target must stay on url's scheme and host: a registry must not be able to steer our
    (authenticated) client to another server through pagination.
    """
    value = headers.get("Link") or headers.get("link")
    if not value:
        return None
    for match in _LINK_PART_RE.finditer(value):
        rels = " ".join(m.group(1) for m in _REL_NEXT_RE.finditer(match.group(2))).lower().split()
        if "next" in rels:
            try:
                target = urljoin(url, match.group(1).strip())
            except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
                raise fail(url, "Link header has a malformed target") from None
            return same_origin(url, target, "Link header")
    return None


def same_origin(base: str, target: str, what: str) -> str:
    try:
        a, b = urlsplit(base), urlsplit(target)
    except ValueError:
        raise fail(base, f"{what} is not a valid URL") from None
    if (a.scheme, a.netloc.lower()) != (b.scheme, b.netloc.lower()) or b.username or b.password:
        raise fail(base, f"{what} points to another server ({f'{b.scheme}://{b.hostname}'[:100]!r}), refused")
    return target


# --- Docker Hub API --------------------------------------------------------------------------------


def parse_hub_repositories(url: str, body: object) -> tuple[list[str], str | None]:
    doc = _object(url, body)
    names: list[str] = []
    for item in _list(url, doc.get("results"), "'results'", null_ok=True):
        entry = _object(url, item, "repository entry")
        name = entry.get("name")
        if not isinstance(name, str) or not is_valid_component(name):
            raise fail(url, f"invalid repository name {str(name)[:120]!r}")
        names.append(name)
    return names, _hub_next(url, doc)


def parse_hub_tags(url: str, body: object) -> tuple[dict[str, TagInfo], str | None]:
    doc = _object(url, body)
    tags: dict[str, TagInfo] = {}
    for item in _list(url, doc.get("results"), "'results'", null_ok=True):
        entry = _object(url, item, "tag entry")
        tag = check_tag(url, entry.get("name"))
        what = f"tag {tag!r}"
        # The top-level digest is the tag's (index) digest; images[].digest are its per-platform children.
        tags[tag] = TagInfo(
            digest=_digest(url, entry.get("digest"), f"{what} digest"),
            media_type=_optional_str(url, entry.get("media_type"), f"{what} media_type"),
            pushed_at=_iso_time(url, entry.get("tag_last_pushed"), f"{what} tag_last_pushed")
            or _iso_time(url, entry.get("last_updated"), f"{what} last_updated"),
            size=_count(url, entry.get("full_size"), f"{what} full_size"),
        )
    return tags, _hub_next(url, doc)


def _hub_next(url: str, doc: Mapping[str, object]) -> str | None:
    nxt = _optional_str(url, doc.get("next"), "'next'")
    if nxt is None:
        return None
    try:
        target = urljoin(url, nxt)
    except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
        raise fail(url, "'next' is not a valid URL") from None
    return same_origin(url, target, "'next'")


# --- Quay API --------------------------------------------------------------------------------------


def parse_quay_repositories(url: str, body: object) -> tuple[list[str], str | None]:
    doc = _object(url, body)
    names: list[str] = []
    for item in _list(url, doc.get("repositories"), "'repositories'", null_ok=True):
        entry = _object(url, item, "repository entry")
        kind = entry.get("kind")
        if kind is not None and kind != "image":
            continue  # application (helm/appr) repositories hold no container images
        names.append(check_repository(url, entry.get("name")))
    return names, _optional_str(url, doc.get("next_page"), "'next_page'")


def parse_quay_tags(url: str, body: object) -> tuple[dict[str, TagInfo], bool]:
    doc = _object(url, body)
    tags: dict[str, TagInfo] = {}
    for item in _list(url, doc.get("tags"), "'tags'", null_ok=True):
        entry = _object(url, item, "tag entry")
        tag = check_tag(url, entry.get("name"))
        what = f"tag {tag!r}"
        tags[tag] = TagInfo(
            digest=_digest(url, entry.get("manifest_digest"), f"{what} manifest_digest"),
            media_type=None,  # quay reports only is_manifest_list, not the media type
            pushed_at=_epoch(url, entry.get("start_ts"), f"{what} start_ts", scale=1)
            or _rfc2822_time(url, entry.get("last_modified"), f"{what} last_modified"),
            size=_count(url, entry.get("size"), f"{what} size"),
            sparse=_flag(url, entry.get("is_sparse"), f"{what} is_sparse"),
        )
    more = doc.get("has_additional", False)
    if not isinstance(more, bool):
        raise fail(url, "'has_additional' is not a boolean")
    return tags, more


# --- GitHub packages API (ghcr.io) -------------------------------------------------------------------
# docs.github.com/rest/packages/packages: a package list is a JSON array of {name, package_type, …}; a
# version list a JSON array of {name (the manifest digest), created_at, updated_at,
# metadata: {package_type, container: {tags: [...]}}}; pages by Link headers.


def parse_github_packages(url: str, body: object) -> list[str]:
    """Names of the container packages on one page (a name may hold '/': a nested repository)."""
    names: list[str] = []
    for item in _list(url, body, "package list"):
        entry = _object(url, item, "package entry")
        kind = entry.get("package_type")
        if kind is not None and kind != "container":
            continue
        names.append(check_repository(url, entry.get("name")))
    return names


def parse_github_versions(url: str, body: object) -> dict[str, TagInfo]:
    """The tags of one page of package versions, each with its version's digest and time.

    Versions come newest first; should a tag show up twice (it moved while we paged), the first wins.
    Untagged versions (children of a multi-platform image, old pushes) are not tags and are left out.
    """
    tags: dict[str, TagInfo] = {}
    for item in _list(url, body, "version list"):
        entry = _object(url, item, "version entry")
        digest = _digest(url, entry.get("name"), "version name")
        if digest is None:
            raise fail(url, "a package version has no digest 'name'")
        what = f"version {digest[:19]}…"
        metadata = _object(url, entry.get("metadata") or {}, f"{what} metadata")
        container = _object(url, metadata.get("container") or {}, f"{what} metadata.container")
        pushed = _iso_time(url, entry.get("updated_at"), f"{what} updated_at") or _iso_time(
            url, entry.get("created_at"), f"{what} created_at")
        for tag in _list(url, container.get("tags"), f"{what} tags", null_ok=True):
            name = check_tag(url, tag)
            if name not in tags:
                tags[name] = TagInfo(digest=digest, pushed_at=pushed)
    return tags
