"""The one request path: every verb goes through RegistryClient.send, and the per-host limit is never
waited on by a request nested inside another to the same host (a streamed PUT pulling its source GET)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tools.imagefactory import make_layer, push_image, push_index

from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.oci import Descriptor, parse_manifest
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import Credential, CredentialStore
from gcrsync.registry.request import Request, Response
from gcrsync.registry.transport import HostPolicy, Transport, TransportOptions
from gcrsync.store import ImageStore
from harness import RegistryServer, skopeo_digest, unique_repo


@asynccontextmanager
async def capped_client(host: str, slots: int) -> AsyncIterator[RegistryClient]:
    options = TransportOptions(max_attempts=2, backoff_base=0.01,
                               host_policies={host: HostPolicy(max_concurrency=slots)})
    async with Transport(options) as transport:
        yield RegistryClient(transport, CredentialStore(use_docker_config=False))


@pytest.mark.timeout(30)
async def test_streamed_put_pulling_its_source_from_the_same_host_does_not_deadlock(
    registry: RegistryServer,
) -> None:
    """One slot for the host: the PUT holds it while its body streams the GET from the same host. Without
    the nested-request rule the GET waits for the PUT's slot for ever (pytest-timeout ends the test)."""
    src_name, dst_name = unique_repo("nest-src"), unique_repo("nest-dst")
    layer = make_layer(801, 300_000)
    _, raw = push_image(registry.pusher(), src_name, "v1", layers=[layer])
    desc = parse_manifest(raw, None).blobs[1]
    async with capped_client(registry.host, slots=1) as client:
        src, dst = client.repository(registry.host, src_name), client.repository(registry.host, dst_name)
        async with src.open_blob(desc) as chunks:
            await dst.put_blob(desc, chunks)
        assert await dst.blob_size(desc.digest) == len(layer)


class _DeclinesMounts:
    """A registry repository that declines cross-repository mounts (as some registries do across
    namespaces), so every blob is streamed source GET → target PUT on one host."""

    def __init__(self, inner: ImageStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def mount_blob(self, desc: Descriptor, source: ImageStore) -> bool:
        return False


@pytest.mark.timeout(30)
async def test_copy_on_one_host_with_fewer_slots_than_jobs_completes(registry: RegistryServer) -> None:
    src_name, dst_name = unique_repo("slots-src"), unique_repo("slots-dst")
    platforms = [("linux", arch, None) for arch in ("amd64", "arm64", "s390x")]
    digest = push_index(registry.pusher(), src_name, "v1", platforms, 150_000, seed=810)
    async with capped_client(registry.host, slots=2) as client:
        src = client.repository(registry.host, src_name)
        dst: Any = _DeclinesMounts(client.repository(registry.host, dst_name))
        result = await copy_image(src, "v1", dst, "v1", BlobMover(jobs=4))
    assert result.state == "copied" and result.blobs_copied == 6 and result.blobs_mounted == 0
    assert skopeo_digest(registry.ref(dst_name, "v1")) == digest


async def test_every_verb_goes_through_the_one_entry_point(token_registry: RegistryServer) -> None:
    """Count RegistryClient.send calls during a copy, a listing and a ping on a token-auth registry: the
    transport saw exactly those requests, their auth retries, and the token requests — nothing else."""
    src_name, dst_name = unique_repo("one-src"), unique_repo("one-dst")
    push_image(token_registry.pusher(), src_name, "v1", layers=[make_layer(830, 40_000), make_layer(831, 30_000)])
    creds = CredentialStore({token_registry.host: Credential(username=token_registry.username,
                                                             password=token_registry.password)},
                            use_docker_config=False)
    async with Transport(TransportOptions(max_attempts=1)) as transport:
        client = RegistryClient(transport, creds)
        sent: list[Request] = []
        statuses: list[int] = []
        original = client.send

        @asynccontextmanager
        async def counting(request: Request) -> AsyncIterator[Response]:
            sent.append(request)
            async with original(request) as resp:
                statuses.append(resp.status)
                yield resp

        client.send = counting  # type: ignore[method-assign]
        await client.ping(token_registry.host)
        src, dst = client.repository(token_registry.host, src_name), client.repository(token_registry.host, dst_name)
        await copy_image(src, "v1", dst, "v1", BlobMover(jobs=2))
        assert await dst.list_tags() == ["v1"]
        await client.get_json(str(client.base(token_registry.host) / "v2" / "_catalog"))
        assert 401 not in statuses and len(sent) >= 8  # a 401 is answered inside the stack, never by a verb
        # Beyond the verbs' own requests the transport saw only the token requests and the one 401 that
        # taught the host's challenge (the ping's first try): no verb has a side path to the network.
        assert client.auth.token_requests >= 2
        assert transport.stats.total_requests == len(sent) + client.auth.token_requests + 1
