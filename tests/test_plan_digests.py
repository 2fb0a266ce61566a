"""The plan's digests on a full verification (a HEAD per target tag), without registries."""

from __future__ import annotations

import asyncio
from typing import Any

from gcrsync.engine.plan import PlanItem, SourceSpec, resolve_digests
from gcrsync.oci import Descriptor

MEDIA = "application/vnd.oci.image.manifest.v1+json"


class Target:
    """A target repository answering HEADs from a table, each digest a new string (as parsed headers are)."""

    name = "t.io/mirror/app"

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests
        self.heads = 0

    async def head_manifest(self, ref: str) -> Descriptor | None:
        self.heads += 1
        found = self.digests.get(ref)
        return Descriptor(MEDIA, "".join(found), 1) if found else None


def test_a_head_that_matches_the_source_keeps_one_digest_string_per_tag() -> None:
    same, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    spec = SourceSpec("s.io", "ns", "t.io/mirror")
    items = [PlanItem(spec, "ns/app", "app", tag, "t.io/mirror/app", source_digest=same) for tag in ("v1", "v2", "v3")]
    target = Target({"v1": same, "v2": other})

    def unused(item: PlanItem) -> Any:
        raise AssertionError("the listing gave every source digest")

    asyncio.run(resolve_digests(items, open_source=unused, open_target=lambda item: target,  # type: ignore[arg-type]
                                ledger_lookup=lambda item: None, trust_ledger=False, query_jobs=2))
    assert target.heads == 3
    assert [i.state for i in items] == ["unchanged", "changed", "new"]
    assert items[0].target_digest is items[0].source_digest  # 50,000 HEADs keep 50,000 strings, not 100,000
    assert items[1].target_digest == other and items[2].target_digest is None
