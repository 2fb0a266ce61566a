"""gcrsync: mirror whole namespaces of container images between registries, with a git ledger."""

from __future__ import annotations

__version__ = "0.1.0"
