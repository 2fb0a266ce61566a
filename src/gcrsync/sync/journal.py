"""The changes a run recorded in its ledgers but has not yet written to the CHANGELOG (ChangeJournal).

A ledger is written as images finish, the CHANGELOG block only when the run publishes at its end. A run
killed in between leaves ledger entries whose "Added" (or "Updated", "Removed upstream") no CHANGELOG
will ever tell: the next run finds them already in the ledger or at the target. So each change (artifacts
newly attached at the target too) is appended here, as one JSON line, before the ledger that holds it is
written; the next run starts its change lists from what is left here, and a publish empties it. The
CHANGELOG then tells every change exactly once.

It lives in the user's state directory, one file per metadata working copy (only one run holds a working
copy's lock at a time), never in the metadata repository itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from gcrsync.ledger import Added, Removed, RunChanges, Updated
from gcrsync.ledger.changelog import Attached
from gcrsync.sync.last_run import state_dir

log = logging.getLogger("gcrsync.sync")

Change = Added | Updated | Removed | Attached
_KINDS: dict[str, type[Added] | type[Updated] | type[Removed] | type[Attached]] = {
    "added": Added, "updated": Updated, "removed": Removed, "attached": Attached}


class ChangeJournal:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_workdir(cls, workdir: Path) -> ChangeJournal:
        key = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
        return cls(state_dir() / "journal" / f"{key}.jsonl")

    def append(self, kind: str, change: Change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"kind": kind, **asdict(change)}, sort_keys=True) + "\n")
            out.flush()

    def load(self) -> RunChanges:
        """What an earlier run recorded and never published; a damaged line is skipped (logged)."""
        changes = RunChanges()
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return changes
        for line in lines:
            try:
                doc = json.loads(line)
                kind = doc.pop("kind")
                if kind == "attached":  # JSON has no tuples: (kind, digest) pairs come back as lists
                    doc["artifacts"] = tuple((str(k), str(d)) for k, d in doc["artifacts"])
                getattr(changes, kind).append(_KINDS[kind](**doc))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("skipping a damaged line of %s", self.path)
        return changes

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
