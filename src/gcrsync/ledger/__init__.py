"""The metadata repository: per-namespace JSON ledgers, the CHANGELOG, and git."""

from __future__ import annotations

from gcrsync.ledger.changelog import Added, Failed, Removed, RunChanges, Updated, prepend, render_block
from gcrsync.ledger.files import FORMAT, Entry, Ledger, LedgerFiles
from gcrsync.ledger.git import Git, strip_userinfo
from gcrsync.ledger.locations import default_metadata_dir
from gcrsync.ledger.metadata import MetadataRepo, PushFailed

__all__ = [
    "FORMAT",
    "Added",
    "Entry",
    "Failed",
    "Git",
    "Ledger",
    "LedgerFiles",
    "MetadataRepo",
    "PushFailed",
    "Removed",
    "RunChanges",
    "Updated",
    "default_metadata_dir",
    "prepend",
    "render_block",
    "strip_userinfo",
]
