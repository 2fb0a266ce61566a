"""When a run verifies the target fully (a HEAD per tag) and when presence in its tag lists is enough.

A full verification finds a target tag someone re-pointed to another digest; a presence check (one
`tags/list` per target repository, the ledger's digest for a listed tag) finds a tag gone but not a tag
re-pointed. `verify_target_every` (config `defaults:`, or `--verify-target-every`) says how often a
namespace gets a full verification: every N-th run or after a duration; `--verify-target` forces one.

The schedule is this machine's observation, like the last run's failures: it lives in the state directory
(`$XDG_STATE_HOME/gcrsync/target-verification.json`), per source namespace and target prefix. Without that
file (a first run, a fresh CI container) every namespace is verified fully: a lost state costs requests,
never a missed check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from gcrsync.config import VerifyEvery
from gcrsync.engine.plan import SourceSpec
from gcrsync.ledger.files import atomic_write
from gcrsync.sync.last_run import state_dir

log = logging.getLogger("gcrsync.sync")
FILE = "target-verification.json"


def key(spec: SourceSpec) -> str:
    return f"{spec.label} -> {spec.target_prefix}"


def _path() -> Path:
    return state_dir() / FILE


def _load() -> dict[str, dict[str, object]]:
    try:
        doc = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


def _runs_and_age(entry: dict[str, object] | None, now: datetime) -> tuple[int, float] | None:
    if entry is None:
        return None
    runs, when = entry.get("runs_since"), entry.get("verified")
    if not isinstance(runs, int) or not isinstance(when, str):
        return None
    try:
        verified = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return runs, (now - verified).total_seconds()


def due(specs: Iterable[SourceSpec], every: VerifyEvery, *, force: bool = False,
        now: datetime | None = None) -> frozenset[str]:
    """The labels of the namespaces whose target this run verifies fully."""
    now = now or datetime.now(UTC)
    state = _load()
    out = set()
    for spec in specs:
        since = _runs_and_age(state.get(key(spec)), now)
        if force or since is None or every.due(*since):
            out.add(spec.label)
        else:
            log.info("%s: target checked by its tag lists (%d run(s) since the last full verification; "
                     "verify_target_every %s)", spec.label, since[0], every.text)
    return frozenset(out)


def record(specs: Iterable[SourceSpec], verified: Iterable[str], incomplete: Iterable[str],
           now: datetime | None = None) -> None:
    """After a run: the namespaces verified fully restart their count; the others count one more run.

    A namespace in `incomplete` (its listing failed, or one of its tags could not be planned or copied)
    counts as not verified: a verification that did not see every tag through does not count as one, so the
    next run verifies again (and a namespace that keeps failing is verified on every run once due).
    """
    now = now or datetime.now(UTC)
    state = _load()
    done = set(verified) - set(incomplete)
    for spec in specs:
        old = state.get(key(spec))
        if spec.label in done:
            state[key(spec)] = {"verified": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "runs_since": 0}
        elif old is not None and isinstance(old.get("runs_since"), int):
            state[key(spec)] = {**old, "runs_since": int(str(old["runs_since"])) + 1}
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
