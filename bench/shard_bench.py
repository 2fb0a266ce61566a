"""Sharded syncs (`gcrsync sync --shard I/N`): balance of the split, bytes pulled, wall time. Informational only.

Usage: ``python bench/shard_bench.py [--tags 2000] [--repos 120] [--skip-registry]``. See bench/README.md.

1. Balance: a synthetic 2,000-tag listing (tags per repository and image sizes drawn from skewed
   distributions, like real namespaces) split for N = 2, 4, 8: per-shard tags and bytes, max/mean; and how
   much of the namespace moves to another shard when one repository appears or disappears.
2. Bytes: the same shape of namespace pushed to a local source registry (tiny unique layers, 1.5 MiB base
   layers shared by all repositories of a family); `gcrsync sync` with N = 1 and N = 4 shards (separate
   caches, as on separate machines) into fresh targets; blob bytes GET from the source (its access log)
   against the namespace's unique blob bytes, and what `gcrsync merge-reports` says about duplicates.
3. Wall time: N = 1 against N = 2 shard processes at once, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "src")]

from tools.imagefactory import derive_seed, make_layer, push_image  # noqa: E402

from gcrsync.engine.plan import SourceSpec  # noqa: E402
from gcrsync.sync.shard import assign, balance, split_listings  # noqa: E402
from gcrsync.types import DiscoveredRepo, TagInfo  # noqa: E402
from harness import RegistryServer, start_registry  # noqa: E402

MIB = 1024 * 1024
NAMESPACE = "shardbench"
FAMILIES = 4
_LOG_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')
_BLOB_GET_RE = re.compile(r"^/v2/.+/blobs/(sha256:[0-9a-f]{64})$")


def tag_counts(tags: int, repos: int, seed: int) -> list[int]:
    """`repos` repository sizes adding up to exactly `tags`: Pareto-shaped (a few repositories hold most)."""
    rng = random.Random(seed)
    raw = [rng.paretovariate(1.5) for _ in range(repos)]
    counts = [max(1, int(tags * r / sum(raw))) for r in raw]
    i = 0
    while sum(counts) != tags:  # fix rounding, largest first
        j = sorted(range(repos), key=lambda k: -counts[k])[i % repos]
        counts[j] += 1 if sum(counts) < tags else (-1 if counts[j] > 1 else 0)
        i += 1
    return counts


def balance_figures(tags: int, repos: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    counts = tag_counts(tags, repos, seed)
    spec = SourceSpec(registry="gcr.io", namespace="bench", target_prefix="docker.io/mirror")
    listing = [DiscoveredRepo(f"bench/app-{r:03d}", {f"v{t}": TagInfo(size=int(rng.lognormvariate(17, 1.2)))
                                                     for t in range(n)}) for r, n in enumerate(counts)]
    out: dict[str, Any] = {"tags": sum(counts), "repositories": repos, "largest_repository_tags": max(counts)}
    for n in (2, 4, 8):
        split = split_listings([(spec, listing)], n)
        assert split.by_bytes
        by_tags = split_listings([(spec, [DiscoveredRepo(r.repository, {t: TagInfo() for t in r.tags})
                                          for r in listing])], n)
        weights = {r.rel: r.bytes or 0 for r in split.repos}
        before = assign(weights, n)
        moved = []
        for trial in range(50):
            grown = {**weights, f"new-{trial}": rng.choice(list(weights.values()))}
            after = assign(grown, n)
            moved.append(sum(weights[k] for k in weights if after[k] != before[k]) / sum(weights.values()))
        largest = max(r.bytes or 0 for r in split.repos)
        out[f"N={n}"] = {
            # whole repositories per shard: no split can beat the largest repository against the mean share
            "lower bound": {"tags": round(max(1.0, max(counts) / (sum(counts) / n)), 3),
                            "bytes": round(max(1.0, largest / (sum(split.loads("bytes")) / n)), 3)},
            "weighed by bytes": {"tags max/mean": round(balance(split.loads("tags")), 3),
                                 "bytes max/mean": round(balance(split.loads("bytes")), 3)},
            "weighed by tags": {"tags max/mean": round(balance(by_tags.loads("tags")), 3)},
            "bytes moved when a repository appears": {"mean": round(sum(moved) / len(moved), 4),
                                                      "max": round(max(moved), 4)},
        }
    return out


# -- the registry part ----------------------------------------------------------------------------------------
def seed_registry(server: RegistryServer, counts: list[int], seed: int) -> int:
    """Push the namespace; returns its unique blob bytes (configs and layers)."""
    bases = [make_layer(derive_seed(seed, "base", f), int(1.5 * MIB)) for f in range(FAMILIES)]
    unique: dict[str, int] = {}

    def one_repo(r: int) -> dict[str, int]:
        pusher, seen = server.pusher(), {}
        for t in range(counts[r]):
            layers = [bases[r % FAMILIES], make_layer(derive_seed(seed, "app", r, t), 4096)]
            _, manifest = push_image(pusher, f"{NAMESPACE}/app-{r:03d}", f"v{t}", layers=layers,
                                     labels={"bench": f"{r}-{t}"})
            doc = json.loads(manifest)
            for desc in [doc["config"], *doc["layers"]]:
                seen[desc["digest"]] = desc["size"]
        return seen

    with ThreadPoolExecutor(max_workers=4) as pool:
        for seen in pool.map(one_repo, range(len(counts))):
            unique.update(seen)
    return sum(unique.values())


def blob_bytes(server: RegistryServer, since: int) -> tuple[int, int]:
    """(bytes of blob GETs, number of blob GETs) logged after line `since`."""
    server.requests()  # the harness's log sync: everything before it is on disk
    total = count = 0
    for line in server.access_log.read_text(errors="replace").splitlines()[since:]:
        m = _LOG_RE.match(line)
        if m and m.group(1) == "GET" and _BLOB_GET_RE.match(m.group(2)) and m.group(4) != "-":
            total += int(m.group(4))
            count += 1
    return total, count


def log_lines(server: RegistryServer) -> int:
    server.requests()
    return len(server.access_log.read_text(errors="replace").splitlines())


def sync_shards(source: RegistryServer, target: RegistryServer, n: int, work: Path, tag: str) -> dict[str, Any]:
    """N shard processes at once (separate caches: separate machines) into `target`; wall time and reports."""
    remote = work / f"{tag}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    since = log_lines(source)
    procs, reports = [], []
    started = time.monotonic()
    for i in range(n):
        report = work / f"{tag}-report-{i}.json"
        reports.append(report)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / f"{tag}-cache-{i}"),
               "XDG_DATA_HOME": str(work / f"{tag}-data-{i}"), "XDG_STATE_HOME": str(work / f"{tag}-state-{i}"),
               "DOCKER_CONFIG": str(work / "nodocker"), "GIT_CONFIG_GLOBAL": str(work / "gitconfig"),
               "NO_PROXY": "127.0.0.1"}
        argv = [sys.executable, "-m", "gcrsync", "-q", "sync", f"{source.host}/{NAMESPACE}", "--dest",
                f"{target.host}/mirror", "--metadata", str(remote), "--report", str(report), "--jobs", "4"]
        if n > 1:
            argv += ["--shard", f"{i}/{n}"]
        log = (work / f"{tag}-{i}.log").open("wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - started
    if any(codes):
        raise SystemExit(f"!!! gcrsync failed ({codes}); see {work}/{tag}-*.log")
    pulled, gets = blob_bytes(source, since)
    merged = subprocess.run([sys.executable, "-m", "gcrsync", "merge-reports", "--json", *map(str, reports)],
                            capture_output=True, text=True, check=True)
    return {"wall_seconds": round(wall, 2), "source_blob_bytes": pulled, "source_blob_gets": gets,
            "merge_reports": json.loads(merged.stdout)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--repos", type=int, default=150)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--skip-registry", action="store_true", help="only the balance figures (no registry)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / ".bench" / "shard-results.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_before": os.getloadavg()[0], "balance": balance_figures(args.tags, args.repos,
                                                                                              args.seed)}
    print(json.dumps(results["balance"], indent=2))
    if not args.skip_registry:
        work = Path(tempfile.mkdtemp(prefix="gcrsync-shard-bench-"))
        servers: list[RegistryServer] = []
        try:
            source = start_registry(work / "source")
            servers.append(source)
            unique = seed_registry(source, tag_counts(args.tags, args.repos, args.seed), args.seed)
            results["unique_blob_bytes"] = unique
            for n in (1, 4, 2):
                target = start_registry(work / f"target-{n}")
                servers.append(target)
                figures = sync_shards(source, target, n, work, f"n{n}")
                figures["pulled/unique"] = round(figures["source_blob_bytes"] / unique, 3)
                results[f"N={n}"] = figures
                print(f"N={n}: {json.dumps(figures)}", flush=True)
        finally:
            for server in servers:
                server.stop()
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average (1 min): {results['load_before']:.2f} before, {results['load_after']:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
