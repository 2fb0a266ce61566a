"""OCI 1.1 referrers at the registry level: the API (filter, paging), its absence, and the fallback tag."""

from __future__ import annotations

import asyncio
from typing import Any

from tools.imagefactory import SPDX_JSON, make_layer, push_attached, push_image

from gcrsync.oci import fallback_tag, parse_manifest, referrer_entry
from gcrsync.registry.client import RegistryClient
from harness import RegistryServer, unique_repo
from personalities.referrers import ReferrersRegistry


def signed_image(server: Any, repo: str, seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    """An image with a signature and an SBOM attached as referrers; returns its descriptor and kind → digest."""
    pusher = server.pusher()
    digest, raw = push_image(pusher, repo, "v1", layers=[make_layer(seed, 2_000)])
    subject = {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest,
               "size": len(raw)}
    kinds = {kind: push_attached(pusher, repo, kind, subject, seed=seed)[0] for kind in ("sig", "sbom")}
    return subject, kinds


async def test_referrers_api_lists_filters_and_pages(registry: RegistryServer, client: RegistryClient) -> None:
    repo = unique_repo("refs")
    with ReferrersRegistry(registry.url, page_size=1) as front:
        subject, kinds = signed_image(front, repo, 1701)
        store = client.repository(front.host, repo)
        listed = await store.referrers(subject["digest"])
        assert listed is not None and {r["digest"] for r in listed} == set(kinds.values())  # two Link pages
        sboms = await store.referrers(subject["digest"], SPDX_JSON)
        assert [r["digest"] for r in sboms or []] == [kinds["sbom"]]
        assert await store.has_referrers_api()
        # Our own description of a referrer matches the registry's: artifactType and annotations.
        sig = await store.get_manifest(kinds["sig"])
        assert referrer_entry(sig) == next(r for r in listed if r["digest"] == kinds["sig"])


async def test_a_registry_without_the_api_says_so(registry: RegistryServer, client: RegistryClient) -> None:
    repo = unique_repo("norefs")
    with ReferrersRegistry(registry.url, native=False) as front:
        subject, _ = signed_image(front, repo, 1702)
        store = client.repository(front.host, repo)
        assert await store.referrers(subject["digest"]) is None
        assert not await store.has_referrers_api()


async def test_fallback_tag_is_idempotent_and_repairs_what_a_concurrent_writer_dropped(
    registry: RegistryServer, client: RegistryClient,
) -> None:
    repo = unique_repo("fallback")
    subject, kinds = signed_image(registry, repo, 1703)
    store = client.repository(registry.host, repo)
    entries = {k: referrer_entry(await store.get_manifest(d)) for k, d in kinds.items()}
    # Two writers add different referrers at once; an entry one of them may still drop is restored when
    # its writer runs again (as every run does for the artifacts it mirrors).
    changed = await asyncio.gather(store.add_fallback_referrers(subject["digest"], [entries["sig"]]),
                                   store.add_fallback_referrers(subject["digest"], [entries["sbom"]]))
    assert all(changed)
    for entry in (entries["sig"], entries["sbom"]):
        await store.add_fallback_referrers(subject["digest"], [entry])
    listed, index_digest = await store.fallback_referrers(subject["digest"])
    assert {e["digest"] for e in listed} == set(kinds.values())
    # Again with what is already there: nothing is written, the index keeps its digest.
    assert not await store.add_fallback_referrers(subject["digest"], list(entries.values()))
    assert (await store.fallback_referrers(subject["digest"]))[1] == index_digest
    tagged = await store.get_manifest(fallback_tag(subject["digest"]))
    assert tagged.is_index and parse_manifest(tagged.raw).digest == index_digest


def test_fallback_tag_schema() -> None:
    assert fallback_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert fallback_tag("sha512:" + "b" * 128) == "sha512-" + "b" * 64
