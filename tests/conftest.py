"""Shared fixtures: real distribution registries on 127.0.0.1 (see harness.py for the object APIs).

Session-scoped servers are shared by the whole suite to stay inside its time budget, so tests must use
``unique_repo()`` names and never assume a registry is empty; ``make_registry`` gives a fresh, empty one.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Make `tools` (repo root) and `harness`/`tokenissuer` (this dir) importable however pytest is launched.
_ROOT = Path(__file__).resolve().parent.parent
for _p in (str(_ROOT), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from gcrsync.registry.client import RegistryClient  # noqa: E402
from gcrsync.registry.credentials import CredentialStore  # noqa: E402
from gcrsync.registry.transport import Transport, TransportOptions  # noqa: E402
from harness import MakeRegistry, RegistryServer, start_registry  # noqa: E402
from tokenissuer import TokenIssuer  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Anonymous registry shared by the session (typical copy source)."""
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A second anonymous registry (typical copy target)."""
    server = start_registry(tmp_path_factory.mktemp("registry2"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """htpasswd (Basic) registry; credentials in ``.username`` / ``.password``."""
    server = start_registry(tmp_path_factory.mktemp("auth-registry"), auth="basic", username="alice")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_issuer() -> Iterator[TokenIssuer]:
    """The token issuer behind ``token_registry`` (user ``bob``); tests may tweak ``anonymous_actions``,
    ``policy`` or ``expires_in`` but must restore them."""
    issuer = TokenIssuer({"bob": "bob-token-pw-7c1e"}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer
) -> Iterator[RegistryServer]:
    """Registry with ``auth: token`` whose realm is ``token_issuer``; ``.issuer`` is that issuer."""
    server = start_registry(
        tmp_path_factory.mktemp("token-registry"),
        auth="token",
        issuer=token_issuer,
        username="bob",
        password=token_issuer.users["bob"],
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def schema1_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Anonymous registry that accepts signed schema1 manifests (``compatibility: schema1: enabled``)."""
    server = start_registry(tmp_path_factory.mktemp("schema1-registry"), schema1=True)
    yield server
    server.stop()


@pytest.fixture
def make_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRegistry]:
    """Factory for fresh, empty registries stopped at the end of the test.

    Takes ``start_registry``'s keyword options: ``auth``, ``schema1``, ``username``, ``password``,
    ``issuer``, ``extra_config``.
    """
    started: list[RegistryServer] = []

    def make(**options: Any) -> RegistryServer:
        server = start_registry(tmp_path_factory.mktemp("fresh-registry"), **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    """A RegistryClient with short retries and no Docker config (the referrers and artifact tests)."""
    async with Transport(TransportOptions(max_attempts=2, backoff_base=0.01)) as transport:
        yield RegistryClient(transport, CredentialStore(use_docker_config=False))
