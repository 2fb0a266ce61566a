"""The last run's failures per namespace, kept on disk so `gcrsync monitor` can report them.

A sync writes it when it ends; monitor runs in another process, maybe on another schedule, and reads it.
It lives in the user's state directory (not the metadata repository): it is this machine's observation,
not part of the mirror's history.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from gcrsync.ledger.files import atomic_write


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gcrsync"


def save_last_run(failed_by_namespace: dict[str, int], pending_by_namespace: dict[str, int] | None = None) -> None:
    """`pending`: images an interrupted run left undone, per namespace."""
    path = state_dir() / "last-run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "failed": failed_by_namespace,
           "pending": pending_by_namespace or {}}
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def load_last_run(what: str = "failed") -> dict[str, int]:
    """The last run's `failed` (or `pending`) count per namespace; {} when unknown."""
    try:
        doc = json.loads((state_dir() / "last-run.json").read_text())
        counts = doc.get(what, {}) if isinstance(doc, dict) else {}
        return {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
    except (OSError, ValueError, AttributeError):
        return {}
