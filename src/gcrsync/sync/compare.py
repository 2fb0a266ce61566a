"""What the target really holds versus the source and the ledger (`gcrsync compare`).

`compare` is the original tool's bootstrap: it asks the target (HEADs) instead of trusting any record, and
`--write` rebuilds the ledger from what it found (rebuild_ledger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gcrsync.engine.plan import Plan, PlanItem
from gcrsync.ledger import Ledger
from gcrsync.sync.mirror import Mirror
from gcrsync.sync.report import NamespaceResult


@dataclass
class NamespaceComparison:
    source: str
    target: str
    error: str | None = None
    in_sync: list[PlanItem] = field(default_factory=list)
    missing: list[PlanItem] = field(default_factory=list)  # at the source, not at the target
    differs: list[PlanItem] = field(default_factory=list)  # target tag has another digest
    ledger_only: list[str] = field(default_factory=list)  # in the ledger, not at the target
    ledger_stale: list[str] = field(default_factory=list)  # ledger digest ≠ target digest
    failed: list[PlanItem] = field(default_factory=list)  # could not be checked (e.g. a HEAD failed)

    def counts(self) -> dict[str, int]:
        return {"in_sync": len(self.in_sync), "missing": len(self.missing), "differs": len(self.differs),
                "ledger_only": len(self.ledger_only), "ledger_stale": len(self.ledger_stale),
                "failed": len(self.failed)}

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "error": self.error, "counts": self.counts(),
            "missing": [i.target for i in self.missing],
            "differs": [{"target": i.target, "source_digest": i.source_digest, "target_digest": i.target_digest}
                        for i in self.differs],
            "ledger_only": self.ledger_only, "ledger_stale": self.ledger_stale,
            "failed": [{"target": i.target, "error": i.error} for i in self.failed],
        }


async def compare(mirror: Mirror, ledgers: dict[str, Ledger]) -> tuple[Plan, list[NamespaceComparison]]:
    """Plan against the real target (never the ledger), then check the ledger against what was found."""
    mirror.options.trust_ledger = False
    plan, namespaces = await mirror.plan({})  # an empty ledger map: every target digest comes from a HEAD
    return plan, _classify(plan, namespaces, ledgers)


def _classify(plan: Plan, namespaces: list[NamespaceResult],
              ledgers: dict[str, Ledger]) -> list[NamespaceComparison]:
    out = []
    for ns in namespaces:
        cmp = NamespaceComparison(ns.spec.label, ns.spec.target_prefix, ns.error)
        seen: dict[tuple[str, str], PlanItem] = {}
        for item in plan.items:
            if item.spec is not ns.spec:
                continue
            seen[(item.rel, item.tag)] = item
            if item.state == "unchanged":
                cmp.in_sync.append(item)
            elif item.state == "new":
                cmp.missing.append(item)
            elif item.state == "changed":
                cmp.differs.append(item)
            elif item.state == "error":
                cmp.failed.append(item)
        ledger = ledgers.get(ns.spec.label)
        recorded = sum(1 for _ in ledger.entries()) if ledger is not None else 0
        if ns.error is None and not seen and recorded:
            # As in a sync (sync.guard): a namespace that lists nothing is taken as a failed listing, so
            # `--write` never rebuilds a ledger to empty from it.
            cmp.error = ns.error = f"{ns.spec.label} lists no images, but its ledger holds {recorded}"
        if ledger is not None and ns.error is None:
            for rel, tag, entry in ledger.entries():
                found = seen.get((rel, tag))
                if found is not None and found.state == "error":
                    continue  # not checked: nothing is known about it either way
                if found is None or found.target_digest is None:
                    cmp.ledger_only.append(f"{rel}:{tag}")
                elif entry.digest is not None and entry.digest != found.target_digest:
                    cmp.ledger_stale.append(f"{rel}:{tag}")
        out.append(cmp)
    return out


def rebuild_ledger(ledger: Ledger, comparison: NamespaceComparison, plan: Plan) -> Ledger:
    """A ledger holding exactly what the target really has for this namespace's mapped names.

    An entry whose check failed is kept as it was: a failed HEAD says nothing about the target.
    """
    fresh = Ledger(ledger.source, ledger.target)
    now = datetime.now(UTC)
    for item in comparison.failed:
        kept = ledger.get(item.rel, item.tag)
        if kept is not None:
            fresh.images.setdefault(item.rel, {})[item.tag] = kept
    for item in comparison.in_sync + comparison.differs:
        if item.target_digest is None:
            continue
        old = ledger.get(item.rel, item.tag)
        if old is not None and old.digest == item.target_digest and old.target == item.target:
            fresh.images.setdefault(item.rel, {})[item.tag] = old  # keep its history and timestamps
            continue
        fresh.record(item.rel, item.tag, digest=item.target_digest, target_ref=item.target,
                     media_type=old.media_type if old and old.digest == item.target_digest else None, now=now)
    return fresh
