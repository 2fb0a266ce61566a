"""The Prometheus text format `gcrsync monitor --metrics` writes (for node_exporter's textfile collector).

A file rather than an HTTP endpoint: monitor runs as a scheduled job, and the collector picks the file up.
"""

from __future__ import annotations

from typing import Any


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(rows: list[dict[str, Any]], checked_at: float) -> str:
    lines = [
        "# HELP gcrsync_tags Tags per source namespace by sync state.",
        "# TYPE gcrsync_tags gauge",
    ]
    for row in rows:
        for state in ("synced", "pending_new", "pending_changed", "failed_last_run", "pending_last_run"):
            lines.append(f'gcrsync_tags{{namespace="{_label(row["namespace"])}",state="{state}"}} {row[state]}')
    lines += [
        "# HELP gcrsync_listing_ok 1 if the namespace could be listed at the last check, else 0.",
        "# TYPE gcrsync_listing_ok gauge",
    ]
    for row in rows:
        lines.append(f'gcrsync_listing_ok{{namespace="{_label(row["namespace"])}"}} {0 if row["error"] else 1}')
    lines += [
        "# HELP gcrsync_last_check_timestamp_seconds When the monitor last checked.",
        "# TYPE gcrsync_last_check_timestamp_seconds gauge",
        f"gcrsync_last_check_timestamp_seconds {checked_at:.3f}",
    ]
    return "\n".join(lines) + "\n"
