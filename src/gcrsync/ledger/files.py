"""The per-namespace JSON ledger: which source tag was copied where, at which digest, and when.

One file per source namespace, `<registry>/<namespace path>.json` under the metadata repository root, written
with sorted keys and a 2-space indent so that a run that changes one tag changes a handful of lines in git.

Legacy migration: the original gcrsync kept, at the repository root, a file named exactly like the gcr.io
namespace (no extension) holding a sorted JSON array of "image:tag" strings. It recorded no digest and no time,
so migrated entries carry `"digest": null`, null timestamps and `"legacy": true`: "present on the target
under this tag, content unknown". Recording a real digest over such an entry returns "updated" and clears the
flag (there is no old digest to keep in previous_digests). The legacy file is deleted only after the new file
has been saved, so a failed run never loses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from gcrsync.errors import LedgerError
from gcrsync.ledger.model import (
    FORMAT,
    LEGACY_REGISTRIES,
    MAX_PREVIOUS_DIGESTS,
    TMP_PREFIX,
    Entry,
    Ledger,
    format_time,
    is_host,
    is_repo_name,
    is_tag,
    validation_message,
)

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "MAX_PREVIOUS_DIGESTS",
    "TMP_PREFIX",
    "Entry",
    "Ledger",
    "LedgerFiles",
    "atomic_write",
    "format_time",
    "is_repo_name",
    "is_tag",
    "merge_ledger_texts",
    "split_source",
]

def split_source(source: str) -> tuple[str, str]:
    """'gcr.io/google-containers' -> ('gcr.io', 'google-containers'); raises LedgerError if invalid."""
    if not isinstance(source, str) or "\x00" in source or source.startswith("/") or not source:
        raise LedgerError(f"invalid namespace {str(source)[:80]!r}: not a registry/namespace path")
    host, _, path = source.partition("/")
    if not is_host(host):
        raise LedgerError(f"invalid namespace {source[:80]!r}: {host[:80]!r} is not a registry host")
    if path and not is_repo_name(path):
        raise LedgerError(f"invalid namespace {source[:80]!r}: path components must be lowercase "
                          "letters, digits and single separators (no '..', no empty parts)")
    return host, path


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + fsync + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not all filesystems allow it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class LedgerFiles:
    """Ledger files under one metadata repository root."""

    def __init__(self, root: Path, *, legacy_registries: frozenset[str] = LEGACY_REGISTRIES) -> None:
        self.root = Path(root)
        self.legacy_registries = legacy_registries
        # Every file save() wrote or removed: what a publish in a work tree we do not own may commit.
        self.written: set[Path] = set()

    def path_for(self, source: str) -> Path:
        host, path = split_source(source)
        return self.root / host / f"{path}.json" if path else self.root / f"{host}.json"

    def source_for(self, relpath: str) -> str | None:
        """The namespace a repository-relative path holds the ledger of, or None if it is not a ledger."""
        if not relpath.endswith(".json") or relpath.startswith("."):
            return None
        candidate = relpath[: -len(".json")]
        try:
            split_source(candidate)
        except LedgerError:
            return None
        return candidate

    def legacy_path_for(self, source: str) -> Path | None:
        host, path = split_source(source)
        if host not in self.legacy_registries or not path or "/" in path:
            return None
        return self.root / path

    def load(self, source: str, target: str) -> Ledger:
        path = self.path_for(source)
        name = str(path.relative_to(self.root))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._load_legacy(source, target)
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"{name}: cannot read: {exc}") from None
        ledger = Ledger.from_json(text, name)
        if ledger.source != source:
            raise LedgerError(f"{name}: holds namespace {ledger.source[:80]!r}, expected {source!r}")
        if ledger.target != target:
            # Entries keep their own target refs, so the plan sees they point elsewhere and copies again.
            log.info("ledger %s: target changed from %s to %s", name, ledger.target, target)
            ledger.target = target
        return ledger

    def _load_legacy(self, source: str, target: str) -> Ledger:
        ledger = Ledger(source, target)
        legacy = self.legacy_path_for(source)
        if legacy is None or not legacy.is_file():
            return ledger
        name = legacy.name
        try:
            items = json.loads(legacy.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise LedgerError(f"{name}: legacy ledger is not readable JSON: {exc}") from None
        if not isinstance(items, list):
            raise LedgerError(f"{name}: legacy ledger must be a JSON array of 'image:tag' strings")
        for item in items:
            repo, sep, tag = item.rpartition(":") if isinstance(item, str) else ("", "", "")
            if not sep or not is_repo_name(repo) or not is_tag(tag):
                raise LedgerError(f"{name}: legacy ledger has an invalid entry {str(item)[:80]!r}")
            try:
                entry = Entry(digest=None, target=f"{target}/{repo}:{tag}", legacy=True)
            except ValidationError as exc:  # e.g. a name too long for an image reference
                raise LedgerError(f"{name}: legacy entry {item[:80]!r}: {validation_message(exc)}") from None
            ledger.images.setdefault(repo, {})[tag] = entry
        ledger.legacy_path = legacy
        log.warning("migrating legacy ledger %s (%d tags) to %s", name, len(ledger),
                    self.path_for(source).relative_to(self.root))
        return ledger

    def save(self, ledger: Ledger) -> Path:
        path = self.path_for(ledger.source)
        atomic_write(path, ledger.to_json())
        self.written.add(path)
        if ledger.legacy_path is not None:
            with contextlib.suppress(FileNotFoundError):
                ledger.legacy_path.unlink()
            self.written.add(ledger.legacy_path)
            ledger.legacy_path = None
        return path

    def namespaces(self) -> list[str]:
        found: list[str] = []
        for path in self.root.rglob("*.json"):
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            source = self.source_for(rel.as_posix())
            if source is not None:
                found.append(source)
        return sorted(found)


def merge_ledger_texts(path: str, ours: str, theirs: str, base: str | None = None) -> str:
    """Two runs' versions of one ledger file as one (see Ledger.merge); a remote side that does not parse
    is replaced by ours, and the common ancestor, when it parses, tells a removal from "never seen"."""
    mine = Ledger.from_json(ours, path)
    try:
        other = Ledger.from_json(theirs, f"{path} (remote)")
    except LedgerError as exc:
        log.warning("%s; replacing it with ours", exc)
        return mine.to_json()
    try:
        common = Ledger.from_json(base, f"{path} (base)") if base else None
    except LedgerError:
        common = None
    return mine.merge(other, common).to_json()
