"""Namespace sync orchestration, in the order a run goes: plan → run → record → prune → report.

    options    SyncOptions: what a run may do
    endpoints  Endpoints: the run's ImageStores, one per location
    planning   discovery of each namespace and the plan (new, changed, unchanged, removed upstream)
    recorder   Recorder and its events: the ledger and CHANGELOG records, and when ledgers are written
    prune      removing target tags whose source tag is gone (via the RemovesTags capability)
    report     SyncReport: what happened, as JSON and as the exit status
    mirror     Mirror: the steps above in order
    compare    what the target really holds versus the source and the ledger (`compare`)
    last_run   the last run's failures per namespace, kept for `monitor`
    verification  when a run verifies the target fully (HEADs) or by presence (tag lists): the schedule
    metrics    the Prometheus text `monitor --metrics` writes
"""

from __future__ import annotations

from gcrsync.sync.mirror import Mirror
from gcrsync.sync.options import SyncOptions
from gcrsync.sync.report import NamespaceResult, SyncReport

__all__ = ["Mirror", "NamespaceResult", "SyncOptions", "SyncReport"]
