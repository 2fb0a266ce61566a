"""Knobs of the transport stack, from the config and the command line (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HostPolicy:
    """Per-host knobs from the config (TLS, plain HTTP, rate and concurrency caps)."""

    insecure: bool = False  # HTTPS without certificate verification (a self-signed registry)
    plain_http: bool | None = None  # speak HTTP; None = only for loopback hosts, as Docker does
    requests_per_second: float | None = None
    max_concurrency: int | None = None


@dataclass
class TransportOptions:
    connect_timeout: float = 10.0  # the original tool's --httptimeout
    read_timeout: float = 60.0  # idle gap between two reads; a blob still making progress never times out
    proxy: str | None = None
    max_attempts: int = 6
    max_retry_wait: float = 60.0  # cap on one Retry-After / backoff sleep
    max_total_wait: float = 300.0  # cap on all sleeping for one request
    backoff_base: float = 0.5
    low_budget: int = 5  # RateLimit-Remaining at or below this → slow down
    host_policies: dict[str, HostPolicy] = field(default_factory=dict)
    user_agent: str = "gcrsync"

    def policy(self, host: str) -> HostPolicy:
        return self.host_policies.get(host, HostPolicy())
