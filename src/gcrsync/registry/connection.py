"""What a repository needs from the client that made it (kept apart so neither module imports the other)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from yarl import URL

from gcrsync.registry.pages import JsonPage
from gcrsync.registry.request import Request, Response
from gcrsync.registry.stats import TransportStats


class Connection(Protocol):
    chunked_hosts: set[str]  # hosts that refused one big PUT: uploads there go in PATCH chunks
    chunk_size: int
    referrers_api: dict[str, bool]  # host → serves the OCI referrers API (learned once per run)
    referrers_probe: dict[str, asyncio.Lock]  # host → held while the first referrers request is out

    @property
    def stats(self) -> TransportStats: ...

    def send(self, request: Request) -> AbstractAsyncContextManager[Response]:
        """The one request entry point (the whole transport stack)."""
        ...

    def method_for(self, registry: str) -> str:
        """The discovery method of a registry host (how it is listed)."""
        ...

    async def web_api(self, registry: str, method: str) -> tuple[str | None, bool]:
        """The web API base of a method for a registry, and whether it is authenticated."""
        ...

    async def get_json(self, url: str) -> JsonPage:
        """GET a JSON document through the stack."""
        ...

    def base(self, host: str) -> URL:
        """scheme://host of a registry's API (docker.io → registry-1.docker.io)."""
        ...
