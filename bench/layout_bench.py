"""Lookups in a large OCI layout: what a no-op run into a layout target asks per image. Informational only.

Usage: ``python bench/layout_bench.py [--images 1000,4000]``. Writes a layout of N single-layer images, each
with a signature attached as an OCI 1.1 referrer (an untagged index.json entry), then, through a fresh
LayoutRepository as a new run would, asks for each image's referrers and HEADs each image by digest, and
prints the seconds of both. Linear in N is the point: index.json used to be parsed and validated again on
every lookup (N²: 13 s and 6 s at 1,000 images).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from gcrsync.layout import LayoutRepository  # noqa: E402
from gcrsync.oci import OCI_MANIFEST, Manifest, parse_manifest  # noqa: E402
from test_layout import put_bytes  # noqa: E402
from test_layout_referrers import put_referrer  # noqa: E402


async def build(path: Path, n: int) -> list[Manifest]:
    repo = LayoutRepository(path, create=True)
    config = await put_bytes(repo, "application/vnd.oci.image.config.v1+json", b"{}")
    images = []
    for i in range(n):
        layer = await put_bytes(repo, "application/vnd.oci.image.layer.v1.tar", f"layer {i}".encode())
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
               "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}]}
        image = parse_manifest(json.dumps(doc).encode())
        await repo.put_manifest(f"v{i}", image)
        await put_referrer(repo, image, f"signature {i}")
        images.append(image)
    return images


async def measure(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="gcrsync-layout-bench-") as tmp:
        images = await build(Path(tmp) / "layout", n)
        fresh = LayoutRepository(Path(tmp) / "layout", create=False)
        start = time.perf_counter()
        for image in images:
            await fresh.referrers(image.digest)
        middle = time.perf_counter()
        for image in images:
            await fresh.head_manifest(image.digest)
        return middle - start, time.perf_counter() - middle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="1000,4000", help="comma-separated layout sizes")
    args = p.parse_args(argv)
    for n in (int(x) for x in args.images.split(",")):
        referrers, heads = asyncio.run(measure(n))
        print(f"{n:>6} images: referrers of each {referrers:.2f} s, HEAD of each {heads:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
