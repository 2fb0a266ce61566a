"""Plan and no-op of a large namespace (default 50,000 tags): wall time, peak RSS and requests per mode.

Usage: ``python bench/largens.py [--repos 500 --tags 100] [--sizes 10000,50000]``. Informational only.

The registry side is a listing fixture (aiohttp, in this process, on 127.0.0.1): the source namespace answers
the gcr.io / Artifact Registry extended ``tags/list`` (repositories as ``child``, every tag with its digest,
so the plan needs no request per source tag), and the target answers a plain ``tags/list`` per repository and
manifest ``HEAD``s, from the same table. No image bytes exist. A ledger recording every tag as mirrored is
written first (with gcrsync's own ledger classes), so each run is a no-op. Runs, per size:

1. ``sync`` with no verification state: a full target verification, one ``HEAD`` per tag;
2. ``sync`` again: the default between full verifications, one ``tags/list`` per target repository;
3. ``sync --dry-run --json``: the plan alone (printed as JSON, to a file).

Each run is a separate gcrsync process, timed fork to reap, peak RSS from ``wait4`` (bench.py's launcher).
The fixture's own work shares the machine's cores with gcrsync, so wall times include serving the requests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "bench")]

from bench import gcrsync_cmd, run_tool, tool_env  # noqa: E402
from gcrsync.engine.plan import SourceSpec, target_location  # noqa: E402
from gcrsync.ledger import Ledger, LedgerFiles  # noqa: E402
from personalities.base import ThreadedApp  # noqa: E402

MEDIA = "application/vnd.oci.image.manifest.v1+json"
NS, MIRROR = "bench", "mirror"


def digest_of(repo: str, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"{repo}:{tag}".encode()).hexdigest()


class Fixture:
    """{repo: [tags]} served as a gcr-style source namespace and a distribution-style target prefix."""

    def __init__(self, repos: int, tags: int) -> None:
        self.repos = {f"app-{r:04d}": [f"v{t}" for t in range(tags)] for r in range(repos)}
        self.stats: Counter[str] = Counter()
        app = web.Application()
        app.router.add_route("*", "/v2/{path:.*}", self.handle)
        self.server = ThreadedApp(app, "largens")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        side = "source" if path.startswith(NS + "/") or path == NS + "/tags/list" else "target"
        self.stats[f"{side} {request.method} {'tags/list' if path.endswith('/tags/list') else 'manifest'}"] += 1
        if path == "":
            return web.json_response({})
        if path == f"{NS}/tags/list":
            return web.json_response({"name": NS, "child": sorted(self.repos), "tags": [], "manifest": {}})
        parts = path.split("/")
        if len(parts) == 4 and parts[2:] == ["tags", "list"] and parts[1] in self.repos:
            repo, tags = parts[1], self.repos[parts[1]]
            if parts[0] == NS:
                manifest = {digest_of(repo, t): {"tag": [t], "mediaType": MEDIA, "imageSizeBytes": "1000",
                                                 "timeUploadedMs": "1727784000123"} for t in tags}  # fmt: skip
                return web.json_response({"name": f"{NS}/{repo}", "child": [], "tags": tags, "manifest": manifest})
            if parts[0] == MIRROR:
                return web.json_response({"name": f"{MIRROR}/{repo}", "tags": tags})
        if len(parts) == 4 and parts[0] == MIRROR and parts[2] == "manifests" and request.method == "HEAD":
            repo, tag = parts[1], parts[3]
            if tag in self.repos.get(repo, ()):
                return web.Response(status=200, headers={"Docker-Content-Digest": digest_of(repo, tag),
                                                         "Content-Type": MEDIA, "Content-Length": "1000"})
        return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)


def write_ledger(root: Path, host: str, fixture: Fixture) -> None:
    spec = SourceSpec(host, NS, f"{host}/{MIRROR}", naming="preserve")
    ledger = Ledger(spec.label, spec.target_prefix)
    now = datetime.now(UTC)
    for repo, tags in fixture.repos.items():
        target = target_location(spec, f"{NS}/{repo}")
        for tag in tags:
            ledger.record(repo, tag, digest=digest_of(repo, tag), target_ref=f"{target}:{tag}", media_type=MEDIA,
                          now=now)  # fmt: skip
    LedgerFiles(root).save(ledger)


def one_size(tags_total: int, per_repo: int, work: Path) -> dict[str, Any]:
    fixture = Fixture(tags_total // per_repo, per_repo)
    env = tool_env(work)
    log = work / "tools.log"
    rows: dict[str, Any] = {"tags": tags_total, "repositories": len(fixture.repos)}
    with fixture.server:
        host = fixture.server.host
        meta = work / "metadata"
        started = time.perf_counter()
        write_ledger(meta, host, fixture)
        rows["ledger_write_s"] = round(time.perf_counter() - started, 2)
        base = [*gcrsync_cmd(), "sync", f"{host}/{NS}", "--discovery", "gcr", "--dest", f"{host}/{MIRROR}",
                "--naming", "preserve", "--metadata", str(meta), "--query-jobs", "16"]  # fmt: skip
        runs = [("no-op, full verification (no state yet)", base),
                ("no-op, default (tags/list presence)", base),
                ("plan (--dry-run --json)", [*base, "--dry-run", "--json"])]
        for label, argv in runs:
            fixture.stats.clear()
            wall, rss, code = run_tool(argv, log, env)
            rows[label] = {"wall_s": round(wall, 2), "peak_rss_mib": round(rss / 1024, 1), "exit": code,
                           "requests": dict(sorted(fixture.stats.items()))}  # fmt: skip
            print(f"  {tags_total:>6} tags  {label:<42} {wall:6.2f}s  {rss / 1024:6.1f} MiB  exit {code}  "
                  f"{sum(fixture.stats.values())} requests", flush=True)  # fmt: skip
    if any(r["exit"] != 0 for r in rows.values() if isinstance(r, dict)):
        print(log.read_text(errors="replace")[-3000:])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tags-per-repo", type=int, default=100)
    p.add_argument("--sizes", default="10000,50000", help="total tags per run, comma-separated")
    p.add_argument("--output", type=Path, default=REPO_ROOT / ".bench" / "largens.json")
    args = p.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="gcrsync-largens-") as tmp:
            results.append(one_size(size, args.tags_per_repo, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    bad = sum(r["exit"] != 0 for res in results for r in res.values() if isinstance(r, dict))
    print(f"results written to {args.output}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
