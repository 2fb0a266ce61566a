"""The browsable catalog: pure functions from ledgers to catalog.json and to the metadata README's section.

Why generated files at all: people open the metadata repository on GitHub to ask "is kube-proxy v1.31.2
mirrored, and what do I pull?"; a directory of JSON ledgers is a poor answer. Everything here is derived
from the ledgers (plus the last recorded run's time and failure count), so regenerating is always safe.

catalog.json (format "gcrsync-catalog/1") is written for the static page (catalog_page.html) and for
scripts. It must stay small for mirrors of 50,000 tags, so each tag is a positional row (see TAG_COLUMNS)
rather than an object with repeated keys, and the mirror ref is stored once per repository; a row only
carries its own target when it is not `<repository mirror>:<tag>`. One row per line keeps git diffs readable.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gcrsync.ledger.model import Entry, Ledger, format_time

CATALOG_FORMAT = "gcrsync-catalog/1"
TAG_COLUMNS = ("tag", "digest", "last_synced", "platforms", "target")
BEGIN_MARKER = "<!-- gcrsync:catalog:begin -->"
END_MARKER = "<!-- gcrsync:catalog:end -->"
NEWEST_TAGS = 3
MAX_README_REPOS = 300  # per namespace: GitHub stops rendering huge READMEs; the page lists everything
DEFAULT_TITLE = "# Container image mirror\n"
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class RunInfo:
    """The last recorded run (one that changed something, so that a no-op run changes no file)."""

    time: datetime | None = None
    failures: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"time": format_time(self.time) if self.time else None, "failures": self.failures}

    @classmethod
    def from_catalog(cls, text: str | None) -> RunInfo:
        """The run recorded in an existing catalog.json, or an empty RunInfo if it is unreadable."""
        try:
            doc = json.loads(text or "")
            run = doc["run"] if doc.get("format") == CATALOG_FORMAT else {}
            when = datetime.fromisoformat(run["time"]) if isinstance(run.get("time"), str) else None
            failures = run.get("failures")
            return cls(when, failures if isinstance(failures, int) and failures >= 0 else None)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return cls()


@dataclass(frozen=True)
class Namespace:
    """One ledger and the repository-relative path it was read from (for the README's link)."""

    path: str
    ledger: Ledger


@dataclass(frozen=True)
class NamespaceRows:
    """A namespace as the catalog needs it: each repository's part of the catalog (repository_part), not
    its ledger entries. catalogfiles reads a ledger file this way: the rows of 50,000 tags take ~14 MB, their
    entries ~32 MB, and the entries of one image at a time are all that exist while the file is read."""

    path: str
    source: str
    target: str
    repositories: dict[str, dict[str, Any]]  # name → repository_part(name, entries)


def _natural(tag: str) -> tuple[tuple[int, int | str], ...]:
    # "v1.10" after "v1.9": tags are compared as runs of digits and text, so "newest" reads right to people.
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(tag) if part)


def _newest_first(tags: dict[str, Entry]) -> list[tuple[str, Entry]]:
    """Newest sync first, then the highest-looking tag name: a stable order for README, catalog and page."""
    ordered = sorted(tags.items(), key=lambda item: _natural(item[0]), reverse=True)
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(ordered, key=lambda item: item[1].last_synced or oldest, reverse=True)


def _mirror_of(tags: dict[str, Entry]) -> str | None:
    """The target repository most of this repository's tags went to (their ref minus ':<tag>')."""
    counts = Counter(e.target[: -len(t) - 1] for t, e in tags.items() if e.target.endswith(f":{t}"))
    return min(counts, key=lambda ref: (-counts[ref], ref)) if counts else None


# One string per distinct time rather than one per row: the tags a run copied share their seconds.
_time_text = functools.lru_cache(maxsize=4096)(format_time)


def _row(tag: str, entry: Entry, mirror: str | None) -> list[Any]:
    row: list[Any] = [tag, entry.digest, _time_text(entry.last_synced) if entry.last_synced else None,
                      list(entry.platforms) if entry.platforms is not None else None,
                      None if mirror is not None and entry.target == f"{mirror}:{tag}" else entry.target]
    while len(row) > 3 and row[-1] is None:  # optional trailing columns are left out, not written as null
        row.pop()
    return row


def repository_part(name: str, entries: dict[str, Entry]) -> dict[str, Any]:
    """One repository in the catalog: the target most of its tags went to, and a row per tag, newest first."""
    mirror = _mirror_of(entries)
    return {"name": name, "mirror": mirror, "tags": [_row(t, e, mirror) for t, e in _newest_first(entries)]}


def _rows(ns: Namespace | NamespaceRows) -> NamespaceRows:
    if isinstance(ns, NamespaceRows):
        return ns
    ledger = ns.ledger
    parts = {name: repository_part(name, entries) for name, entries in ledger.images.items() if entries}
    return NamespaceRows(ns.path, ledger.source, ledger.target, parts)


def build_catalog(namespaces: Sequence[Namespace | NamespaceRows], run: RunInfo) -> dict[str, Any]:
    """The catalog document: namespaces by source, repositories by name, tags newest first."""
    out: list[dict[str, Any]] = []
    repos = tags = 0
    for ns in sorted(map(_rows, namespaces), key=lambda n: n.source):
        repositories = [ns.repositories[name] for name in sorted(ns.repositories)]
        repos += len(repositories)
        tags += sum(len(repo["tags"]) for repo in repositories)
        out.append({"source": ns.source, "target": ns.target, "ledger": ns.path, "repositories": repositories})
    return {"format": CATALOG_FORMAT, "tag_columns": list(TAG_COLUMNS), "run": run.to_json(),
            "summary": {"namespaces": len(out), "repositories": repos, "tags": tags}, "namespaces": out}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def catalog_json(doc: dict[str, Any]) -> str:
    """Compact JSON with one tag row per line (valid JSON; small, and diffs stay readable in git)."""
    head = {k: v for k, v in doc.items() if k != "namespaces"}
    parts = [_dumps(head)[:-1] + ',"namespaces":[']
    for i, ns in enumerate(doc["namespaces"]):
        meta = {k: v for k, v in ns.items() if k != "repositories"}
        parts.append(("," if i else "") + "\n" + _dumps(meta)[:-1] + ',"repositories":[')
        for j, repo in enumerate(ns["repositories"]):
            rows = ",\n".join(_dumps(row) for row in repo["tags"])
            meta = {k: v for k, v in repo.items() if k != "tags"}
            parts.append(("," if j else "") + "\n" + _dumps(meta)[:-1] + ',"tags":[\n' + rows + "]}")
        parts.append("]}")
    parts.append("]}\n")
    return "".join(parts)


def catalog_script(json_text: str) -> str:
    """catalog.js: the same document for index.html, which cannot fetch() catalog.json from a file: URL."""
    return "window.GCRSYNC_CATALOG = " + json_text.rstrip("\n") + ";\n"


def pull_command(target: str) -> str:
    """What a reader runs to get the mirrored image. An OCI layout is no registry: say how to copy it out."""
    if target.startswith("oci:"):
        path, _, tag = target[4:].rpartition(":")
        if not path or "/" in tag:
            path, tag = target[4:], ""
        name = path.rstrip("/").rsplit("/", 1)[-1] or "image"
        return f"skopeo copy oci:{path}{':' + tag if tag else ''} docker-daemon:{name}:{tag or 'latest'}"
    return f"docker pull {target}"


def _when(text: str | None) -> str:
    return text.replace("T", " ").removesuffix("Z")[:16] + " UTC" if text else "unknown"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _code(text: str) -> str:
    # Names follow the OCI grammar (no backtick, no pipe); this only guards the layout against a bad ledger.
    return "`" + " ".join(text.replace("`", "'").replace("|", "\\|").split()) + "`"


def _link(path: str) -> str:
    return f"[{path}](<{path}>)"


def readme_section(doc: dict[str, Any], *, max_repos: int = MAX_README_REPOS) -> str:
    """The README text between (and including) the markers, from a catalog document."""
    s, run = doc["summary"], doc["run"]
    failures = "unknown" if run["failures"] is None else str(run["failures"])
    lines = [BEGIN_MARKER,
             "<!-- Generated by gcrsync from the ledgers on every run: edits between these markers are replaced. -->",
             "", "## Mirrored images", "",
             f"**{_count(s['namespaces'], 'namespace')} · {_count(s['repositories'], 'repository')} · "
             f"{_count(s['tags'], 'tag')}** · "
             f"last recorded run: {_when(run['time'])} · failures in that run: {failures}", "",
             "Search every tag: [index.html](index.html) (open it from GitHub Pages or a checkout) · "
             "all of it as JSON: [catalog.json](catalog.json)", ""]
    if not doc["namespaces"]:
        lines += ["Nothing has been mirrored yet.", ""]
    for ns in doc["namespaces"]:
        lines += [f"### {_code(ns['source'])} → {_code(ns['target'])}", "", f"Ledger: {_link(ns['ledger'])}", ""]
        repos = ns["repositories"]
        if not repos:
            lines += ["No images recorded yet.", ""]
            continue
        lines += ["| Repository | Tags | Newest tags | Last sync | Pull |", "|---|---:|---|---|---|"]
        for repo in repos[:max_repos]:
            rows = repo["tags"]
            newest = ", ".join(_code(row[0]) for row in rows[:NEWEST_TAGS])
            target = row_target(repo, rows[0])
            last = max((row[2] for row in rows if row[2]), default=None)
            lines.append(f"| {_code(repo['name'])} | {len(rows)} | {newest} | {_when(last)} | "
                         f"{_code(pull_command(target))} |")
        if len(repos) > max_repos:
            lines.append(f"\n… and {len(repos) - max_repos} more repositories: see [index.html](index.html).")
        lines.append("")
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def row_target(repo: dict[str, Any], row: list[Any]) -> str:
    """A tag row's full target ref (column 5 if present, else `<mirror>:<tag>`)."""
    if len(row) > 4 and row[4]:
        return str(row[4])
    return f"{repo['mirror']}:{row[0]}"


def merge_readme(existing: str | None, section: str) -> str:
    """Replace our marked section in the owner's README, keeping every byte outside the markers.

    No section yet: append one (under a default title for a new file). A begin marker without an end marker
    means the end was deleted by hand: everything from the begin marker on is ours, so it is replaced.
    """
    if not existing:
        return DEFAULT_TITLE + "\n" + section
    begin = existing.find(BEGIN_MARKER)
    if begin < 0:
        return existing + ("" if existing.endswith("\n") else "\n") + "\n" + section
    end = existing.find(END_MARKER, begin)
    if end < 0:
        return existing[:begin] + section
    after = existing[end + len(END_MARKER):]
    return existing[:begin] + section.rstrip("\n") + after
