"""The ledger's data model: one namespace's image:tag → digest record, validated strictly.

Everything here comes from a file in a git repository anyone may have edited, so it is parsed as
untrusted input (pydantic strict models, names checked before they become paths).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from gcrsync.errors import LedgerError
from gcrsync.ledger.jsonscan import STREAMED, Unreadable, scan_document

FORMAT = "gcrsync-ledger/1"
MAX_PREVIOUS_DIGESTS = 10
LEGACY_REGISTRIES = frozenset({"gcr.io"})  # the original tool only ever read gcr.io namespaces
TMP_PREFIX = ".gcrsync-tmp-"  # atomic-write temp files; excluded from git by MetadataRepo

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*(?::\d{{1,5}})?$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")  # OCI distribution path component
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
_REF_RE = re.compile(r"^[^\s\x00]{1,512}$")
T = TypeVar("T")


def is_repo_name(name: str) -> bool:
    """True for a repository path like 'pause' or 'team/app' (OCI grammar, so never '..' or absolute)."""
    return bool(name) and all(_COMPONENT_RE.fullmatch(part) for part in name.split("/"))  # "$" allows "\n"


def is_tag(tag: str) -> bool:
    return bool(_TAG_RE.fullmatch(tag))


def is_host(host: str) -> bool:
    # Like docker's reference grammar: a registry host has a dot or a port, or is localhost. Requiring this
    # keeps namespaces() from mistaking unrelated root files (or legacy ledgers) for namespaces.
    return bool(_HOST_RE.match(host)) and ("." in host or ":" in host or host == "localhost")


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC; stored with second resolution, as written to the file."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def _parse_time(value: object) -> object:
    if isinstance(value, str):
        return _time_of(value)
    if isinstance(value, datetime):
        return _utc(value)
    return value


@functools.lru_cache(maxsize=4096)  # one (immutable) datetime per time text: a run's tags share a few times
def _time_of(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"time without a time zone: {value[:40]!r}")
    return _utc(parsed)


def _matching(pattern: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: object) -> object:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"not {what}: {value[:80]!r}")
        return value

    return BeforeValidator(check)


Time = Annotated[datetime, BeforeValidator(_parse_time)]
Digest = Annotated[str, _matching(_DIGEST_RE, "a digest")]
Ref = Annotated[str, _matching(_REF_RE, "an image reference")]


class Attachment(BaseModel):
    """An artifact attached to a mirrored tag: a cosign tag-schema tag or an OCI 1.1 referrer."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    digest: Digest
    kind: Annotated[str, _matching(_KIND_RE, "an artifact kind")]  # "sig", "att", "sbom", … or "referrer"
    subject: Digest  # the tagged manifest, an index child, or another artifact
    artifact_type: str | None = Field(default=None, max_length=255)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest, "kind": self.kind, "subject": self.subject}
        if self.artifact_type:
            out["artifact_type"] = self.artifact_type
        return out


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid", strict=True))
class Entry:
    """One source tag as last copied. Immutable: Ledger.record replaces entries.

    A validated dataclass with slots rather than a BaseModel: a ledger of 50,000 tags holds 50,000 of
    these, and a model's per-instance dict and bookkeeping took about twice the memory.
    """

    digest: Digest | None
    target: Ref
    media_type: str | None = None
    first_synced: Time | None = None
    last_synced: Time | None = None
    previous_digests: list[Digest] = Field(default_factory=list)
    # Only set when the copy's digest differs from the source's (platform-filtered index): the plan then
    # compares the source's current digest against this, not against `digest`.
    source_digest: Digest | None = None
    platforms: list[str] | None = None
    legacy: bool = False
    artifacts: list[Attachment] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _digest_required(self) -> Entry:
        if self.digest is None and not self.legacy:
            raise ValueError("digest is null but the entry is not marked legacy")
        return self

    @property
    def effective_source_digest(self) -> str | None:
        """The source digest this entry was copied from (what a plan compares the source against)."""
        return self.source_digest or self.digest

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": self.digest,
            "target": self.target,
            "media_type": self.media_type,
            "first_synced": format_time(self.first_synced) if self.first_synced else None,
            "last_synced": format_time(self.last_synced) if self.last_synced else None,
            "previous_digests": list(self.previous_digests),
        }
        if self.source_digest is not None and self.source_digest != self.digest:
            out["source_digest"] = self.source_digest
        if self.platforms is not None:
            out["platforms"] = list(self.platforms)
        if self.legacy:
            out["legacy"] = True
        if self.artifacts:
            out["artifacts"] = [a.to_json() for a in self.artifacts]
        return out


def _history(*groups: Sequence[str | None], exclude: str | None) -> list[str]:
    """Distinct digests, most recent first, without the current one, bounded."""
    seen: list[str] = []
    for group in groups:
        for digest in group:
            if digest and digest != exclude and digest not in seen:
                seen.append(digest)
    return seen[:MAX_PREVIOUS_DIGESTS]


class Ledger:
    """All entries of one source namespace. Plain data: knows nothing about registries or git."""

    def __init__(self, source: str, target: str, images: dict[str, dict[str, Entry]] | None = None) -> None:
        self.source = source
        self.target = target
        self.images: dict[str, dict[str, Entry]] = images or {}
        self.legacy_path: Path | None = None  # set by LedgerFiles.load when migrated; deleted on save

    def __repr__(self) -> str:
        return f"Ledger({self.source!r} -> {self.target!r}, {len(self)} tags)"

    def __len__(self) -> int:
        return sum(len(tags) for tags in self.images.values())

    def get(self, repo: str, tag: str) -> Entry | None:
        return self.images.get(repo, {}).get(tag)

    def entries(self) -> Iterator[tuple[str, str, Entry]]:
        for repo in sorted(self.images):
            for tag in sorted(self.images[repo]):
                yield repo, tag, self.images[repo][tag]

    def record(
        self,
        repo: str,
        tag: str,
        *,
        digest: str,
        target_ref: str,
        media_type: str | None,
        now: datetime,
        source_digest: str | None = None,
        platforms: Sequence[str] | None = None,
    ) -> Literal["added", "updated", "unchanged"]:
        """Record that source repo:tag now has `digest` at target_ref.

        "unchanged" leaves the entry (and last_synced) alone on purpose: otherwise every run would rewrite
        every timestamp and produce a commit although nothing was copied.
        """
        if not is_repo_name(repo) or not is_tag(tag):
            raise LedgerError(f"invalid image name {repo!r}:{tag!r} for ledger {self.source}")
        old = self.get(repo, tag)
        src = source_digest if source_digest and source_digest != digest else None
        plats = sorted(platforms) if platforms is not None else None
        when = _utc(now)
        try:
            if old is None:
                new = Entry(digest=digest, target=target_ref, media_type=media_type, first_synced=when,
                            last_synced=when, source_digest=src, platforms=plats)
                result: Literal["added", "updated", "unchanged"] = "added"
            else:
                same = (old.digest, old.target, old.source_digest, old.media_type, old.platforms, old.legacy) == (
                    digest, target_ref, src, media_type, plats, False)
                if same:
                    return "unchanged"
                new = Entry(digest=digest, target=target_ref, media_type=media_type,
                            first_synced=old.first_synced or when, last_synced=when,
                            previous_digests=_history([old.digest], old.previous_digests, exclude=digest),
                            source_digest=src, platforms=plats)
                result = "updated"
        except ValidationError as exc:
            reason = validation_message(exc)
            raise LedgerError(f"cannot record {repo}:{tag} in ledger {self.source}: {reason}") from None
        self.images.setdefault(repo, {})[tag] = new
        return result

    def set_artifacts(self, repo: str, tag: str, artifacts: Sequence[dict[str, Any]]) -> bool:
        """Record what is attached to a recorded tag now; True when that changed the entry.

        Attachments live beside the image's own digest and history: a new signature on an unchanged image
        changes this list, not the entry's digest or timestamps."""
        old = self.get(repo, tag)
        if old is None:
            return False
        try:
            new = sorted({a["digest"]: Attachment.model_validate(a) for a in artifacts}.values(),
                         key=lambda a: (a.subject, a.kind, a.digest))
        except ValidationError as exc:
            raise LedgerError(f"cannot record artifacts of {repo}:{tag}: {validation_message(exc)}") from None
        if new == old.artifacts:
            return False
        self.images[repo][tag] = replace(old, artifacts=new)
        return True

    def remove(self, repo: str, tag: str) -> bool:
        """Forget a tag (removed upstream). Returns False if it was not recorded."""
        tags = self.images.get(repo)
        if not tags or tag not in tags:
            return False
        del tags[tag]
        if not tags:
            del self.images[repo]
        return True

    def merge(self, other: Ledger, base: Ledger | None = None) -> Ledger:
        """Union by repo/tag, for two runs that raced. On conflict the newer last_synced wins (self on a tie);
        the loser's digests go into previous_digests. Keeps self's source and target.

        `base` is the ledger both started from: an entry one side removed and the other left as it was
        stays removed (a plain union would bring a pruned entry back). Without it, removals come back.
        """
        if other.source != self.source:
            raise LedgerError(f"cannot merge ledger {other.source} into {self.source}")
        out = Ledger(self.source, self.target)
        for repo, tag, mine in self.entries():
            out.images.setdefault(repo, {})[tag] = mine
        for repo, tag, theirs in other.entries():
            mine_or_none = out.get(repo, tag)
            if mine_or_none is None:
                out.images.setdefault(repo, {})[tag] = theirs
                continue
            if mine_or_none == theirs:
                continue
            oldest = datetime.min.replace(tzinfo=UTC)
            if (theirs.last_synced or oldest) > (mine_or_none.last_synced or oldest):
                winner, loser = theirs, mine_or_none
            else:
                winner, loser = mine_or_none, theirs
            firsts = [t for t in (winner.first_synced, loser.first_synced) if t is not None]
            merged = replace(
                winner, first_synced=min(firsts) if firsts else None,
                previous_digests=_history(winner.previous_digests, [loser.digest], loser.previous_digests,
                                          exclude=winner.digest),
            )
            out.images[repo][tag] = merged
        if base is not None:
            for repo, tag, was in base.entries():
                ours_now, theirs_now = self.get(repo, tag), other.get(repo, tag)
                if (ours_now is None and theirs_now == was) or (theirs_now is None and ours_now == was):
                    out.remove(repo, tag)  # removed on one side, untouched on the other
        return out

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "source": self.source,
            "target": self.target,
            "images": {repo: {tag: entry.to_json() for tag, entry in tags.items()}
                       for repo, tags in self.images.items() if tags},
        }
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Ledger:
        """Parse a ledger file's text; every problem is a one-line LedgerError naming `where`."""
        source, target, images = read_ledger(text, where, lambda repo, entries: entries)
        return cls(source, target, images)


def read_ledger(text: str | TextIO, where: str,
                convert: Callable[[str, dict[str, Entry]], T]) -> tuple[str, str, dict[str, T]]:
    """A ledger file's source, target and images (those with tags), each image's entries passed through
    convert(repo, entries) (never None) as they are parsed: the whole JSON document never exists at once (nor,
    from an open file, the whole text), and the catalog keeps its rows, not the entries. A problem is the
    one-line LedgerError naming `where` that json.loads and these checks always gave: invalid JSON, the
    document's keys, then the last image (in file order) with a problem, and in it the last tag."""
    parsed: dict[str, T | LedgerError | None] = {}  # image → converted, its first problem, or None: no tags
    names: dict[str, str] = {}  # tag name → one string for it

    def image(repo: str, tags: object) -> None:
        parsed[repo] = _image(repo, tags, where, convert, names)

    try:
        doc = scan_document(text, "images", parsed.clear, image)
    except Unreadable:  # invalid JSON or not an object: json.loads says what is wrong, as it always did
        parsed.clear()
        if not isinstance(text, str):
            text.seek(0)
            text = text.read()
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise LedgerError(f"{where}: invalid JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("images"), dict):
            images = doc["images"]
            for repo in list(images):  # taken out of the document as they are parsed
                image(repo, images.pop(repo))
            doc["images"] = STREAMED
    if not isinstance(doc, dict):
        raise LedgerError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise LedgerError(f"{where}: unsupported format {str(doc.get('format'))[:40]!r}, expected {FORMAT!r}")
    unknown = set(doc) - {"format", "source", "target", "images"}
    if unknown:
        raise LedgerError(f"{where}: unknown keys {[key[:40] for key in sorted(unknown)[:5]]}")
    source, target = doc.get("source"), doc.get("target")
    if not isinstance(source, str) or not isinstance(target, str) or not _REF_RE.fullmatch(target):
        raise LedgerError(f"{where}: 'source' and 'target' must be image references")
    if doc.get("images") is not STREAMED:
        raise LedgerError(f"{where}: 'images' must be an object")
    for result in reversed(parsed.values()):
        if isinstance(result, LedgerError):
            raise result
    # Last image first, as the entries were always read (an order only ties in the catalog's sort can show).
    return source, target, {repo: out for repo, out in reversed(parsed.items()) if out is not None
                            and not isinstance(out, LedgerError)}


def _image(repo: str, tags: object, where: str, convert: Callable[[str, dict[str, Entry]], T],
           names: dict[str, str]) -> T | LedgerError | None:
    """One image of a ledger file: its entries, converted; or its problem (reported only if no other comes first)."""
    if not is_repo_name(repo):
        return LedgerError(f"{where}: invalid image name {repo[:80]!r}")
    if not isinstance(tags, dict):
        return LedgerError(f"{where}: image {repo[:80]!r}: expected an object of tags")
    entries: dict[str, Entry] = {}
    while tags:  # last tag first, as they were always read
        tag, raw = tags.popitem()
        tag = names.setdefault(tag, tag)  # one string per tag name in the file, as json.loads keeps keys
        if isinstance(raw, dict) and isinstance(raw.get("media_type"), str):
            raw["media_type"] = names.setdefault(raw["media_type"], raw["media_type"])  # a handful of types
        if not is_tag(tag):
            return LedgerError(f"{where}: image {repo[:80]!r}: invalid tag {tag[:80]!r}")
        if not isinstance(raw, dict):
            return LedgerError(f"{where}: {repo[:80]}:{tag}: expected an object")
        try:
            entries[tag] = Entry(**raw)
        except ValidationError as exc:
            return LedgerError(f"{where}: {repo[:80]}:{tag}: {validation_message(exc)}")
    return convert(repo, entries) if entries else None


def validation_message(exc: ValidationError) -> str:
    """The first validation error as one short line: a bad ledger file must not flood the terminal."""
    err = exc.errors()[0]
    loc = " ".join(".".join(str(part)[:40] for part in err["loc"]).split())  # extra keys come from the file
    msg = str(err["msg"]).splitlines()[0]
    return f"{loc}: {msg}" if loc else msg
