"""Write the catalog files (README.md section, catalog.json, catalog.js, index.html) into a metadata root.

Kept apart from catalog.py (pure text generation) so the generation can be tested without a file system and
MetadataRepo only needs one call. Files are rewritten only when their text changes, so a run that changed no
ledger leaves them byte-identical and produces no commit.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from importlib import resources
from pathlib import Path

from gcrsync.errors import LedgerError
from gcrsync.ledger.catalog import (
    BEGIN_MARKER,
    NamespaceRows,
    RunInfo,
    build_catalog,
    catalog_json,
    catalog_script,
    merge_readme,
    readme_section,
    repository_part,
)
from gcrsync.ledger.files import LedgerFiles, atomic_write
from gcrsync.ledger.git import Git
from gcrsync.ledger.model import read_ledger

log = logging.getLogger(__name__)

README = "README.md"
CATALOG_JSON = "catalog.json"
CATALOG_JS = "catalog.js"
INDEX_HTML = "index.html"
GENERATED = (README, CATALOG_JSON, CATALOG_JS, INDEX_HTML)


def page_html() -> str:
    """The static page (package data: editable as HTML, and the same text on every run)."""
    return resources.files("gcrsync.ledger").joinpath("catalog_page.html").read_text(encoding="utf-8")


def read_namespaces(root: Path) -> list[NamespaceRows]:
    """Every ledger under root, as the catalog's rows (each image's entries become rows as the file is read,
    so a ledger's entries never all exist at once). A ledger that does not parse is left out with a warning:
    the catalog must not stop a run whose sync already succeeded (the sync itself refuses a broken ledger
    it needs)."""
    ledgers = LedgerFiles(root)
    found = []
    for source in ledgers.namespaces():
        path = ledgers.path_for(source)
        rel = path.relative_to(root).as_posix()
        try:
            with path.open(encoding="utf-8") as fh:  # read as it is parsed: never the whole text at once
                holds, target, repositories = read_ledger(fh, rel, repository_part)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("catalog: cannot read %s: %s", rel, exc)
            continue
        except LedgerError as exc:
            log.warning("catalog: leaving out %s", exc)
            continue
        if holds != source:
            log.warning("catalog: leaving out %s: it holds namespace %r", rel, holds[:80])
            continue
        found.append(NamespaceRows(rel, holds, target, repositories))
    return found


def _read(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8", newline="") as fh:  # newline="": an owner's CRLF lines stay CRLF
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path.name}: cannot read: {exc}") from None


def write_catalog(root: Path, run: RunInfo | None = None, *, leave: Collection[str] = ()) -> list[Path]:
    """Regenerate the catalog files from the ledgers under root; returns the files whose text changed.

    run=None keeps the run recorded in the existing catalog.json (a `gcrsync catalog`, or a run that
    changed nothing, must not pretend to be a new run). Files named in `leave` are not touched.
    """
    if run is None:
        run = RunInfo.from_catalog(_read(root / CATALOG_JSON))
    doc = build_catalog(read_namespaces(root), run)
    data = catalog_json(doc)
    section = readme_section(doc) if README not in leave else None
    del doc  # every tag's row: not kept while the texts are made and compared
    texts = {
        CATALOG_JSON: data,
        CATALOG_JS: catalog_script(data),
        INDEX_HTML: page_html(),
    }
    if section is not None:
        texts[README] = merge_readme(_read(root / README), section)
    changed = []
    for name, text in texts.items():
        if name in leave:
            continue
        path = root / name
        if _read(path) != text:
            atomic_write(path, text)
            changed.append(path)
    return changed


def write_repo_catalog(root: Path, run: RunInfo | None, *, git: Git | None, user_tree: bool,
                       ours: Collection[Path]) -> list[Path]:
    """write_catalog for a MetadataRepo. In the user's own work tree (user_tree) a README.md with uncommitted
    changes we did not make is left alone for this run: committing their edits in progress would be wrong."""
    leave = []
    readme = root / README
    if git is not None and user_tree and readme not in ours \
            and (git.probe("status", "--porcelain", "--", README) or "").strip():
        log.warning("%s has uncommitted changes: its catalog section is left alone until they are committed",
                    README)
        leave.append(README)
    return write_catalog(root, run, leave=leave)


def catalog_present(root: Path) -> bool:
    """The catalog files are there and the README carries our section (else a quiet run still writes it)."""
    try:
        return (root / CATALOG_JSON).exists() and BEGIN_MARKER in (root / README).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
