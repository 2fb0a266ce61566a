"""How big is catalog.json and how fast is index.html for a very large mirror (issue 13)?

Generates ledgers with --tags tags (default 50,000: 5 namespaces x 100 repositories x 100 tags, semver-ish
tags, random sha256 digests, a platform subset on every 10th tag), builds the catalog files, then opens
index.html from a file: URL in Debian's headless Chromium, once per query and --runs times each. The page
itself reports (attributes on <html>):

- data-load-ms: navigation start → catalog.js parsed, 50,000-row index built, namespaces listed and the
  query from the URL (#q=…) searched and rendered: what a reader waits for before seeing results;
- data-search-ms: that one search alone (filter every row + render up to 100 hits), which is what each
  keystroke costs.

    .venv/bin/python bench/catalog_bench.py [--tags 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.headless import dump_dom  # noqa: E402

from gcrsync.ledger import Ledger, LedgerFiles  # noqa: E402
from gcrsync.ledger.catalog import RunInfo  # noqa: E402
from gcrsync.ledger.catalogfiles import CATALOG_JS, CATALOG_JSON, write_catalog  # noqa: E402

NAMESPACES = ["gcr.io/google-containers", "registry.k8s.io", "quay.io/coreos", "ghcr.io/fluxcd",
              "docker.io/bitnami", "gcr.io/distroless", "quay.io/prometheus", "ghcr.io/actions"]
QUERIES = ["kube-proxy-17 v1.3.2", "v1.9", "repo-000", "sha256:00ff", "no-such-image"]


def make_ledgers(root: Path, tags: int, seed: int = 13) -> int:
    rng = random.Random(seed)
    per_repo, repos_per_ns = 100, 100
    namespaces = max(1, -(-tags // (per_repo * repos_per_ns)))
    store, made, t0 = LedgerFiles(root), 0, datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(namespaces):
        source = NAMESPACES[n % len(NAMESPACES)] + ("" if n < len(NAMESPACES) else f"-{n}")
        ledger = Ledger(source, "docker.io/mirror")
        for r in range(repos_per_ns):
            name = f"kube-proxy-{r}" if n == 0 else f"team/repo-{r:03d}"
            target = f"docker.io/mirror/{name.replace('/', '_')}"
            for t in range(per_repo):
                if made >= tags:
                    break
                tag = f"v1.{t // 10}.{t % 10}" + ("-rc.1" if t % 7 == 0 else "")
                ledger.record(name, tag, digest="sha256:" + rng.randbytes(32).hex(), target_ref=f"{target}:{tag}",
                              media_type=None, now=t0 + timedelta(minutes=rng.randrange(40_000)),
                              platforms=["linux/amd64", "linux/arm64"] if t % 10 == 0 else None)
                made += 1
        store.save(ledger)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "catalog")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    made = make_ledgers(args.out, args.tags)
    start = time.perf_counter()
    write_catalog(args.out, RunInfo(datetime(2026, 11, 30, tzinfo=UTC), 0))
    build_s = time.perf_counter() - start
    data = (args.out / CATALOG_JSON).read_bytes()
    script = (args.out / CATALOG_JS).stat().st_size
    per10k = len(data) * 10_000 / made
    gz = len(gzip.compress(data, 6)) * 10_000 / made
    print(f"{made} tags: catalog.json {len(data) / 1e6:.2f} MB = {per10k / 1e3:.0f} kB per 10,000 tags "
          f"({gz / 1e3:.0f} kB gzipped, as GitHub Pages serves it); catalog.js {script / 1e6:.2f} MB; "
          f"generated in {build_s:.2f} s")
    page = (args.out / "index.html").as_uri()
    print(f"\nheadless Chromium, file: URL, median of {args.runs} runs\n")
    print("| query | matches | load + search ms | search ms |\n|---|---:|---:|---:|")
    for query in QUERIES:
        loads, searches, matches = [], [], "?"
        for _ in range(args.runs):
            dom = dump_dom(page + "#q=" + quote(query))
            tag = re.search(r"<html[^>]*>", dom)
            attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(0) if tag else ""))
            loads.append(float(attrs["data-load-ms"]))
            searches.append(float(attrs["data-search-ms"]))
            matches = attrs["data-matches"]
        print(f"| `{query}` | {matches} | {statistics.median(loads):.0f} | {statistics.median(searches):.1f} |")


if __name__ == "__main__":
    main()
