"""What mirroring attached artifacts costs (issue 11): requests and wall time of a cold and a no-op sync of a
namespace whose images carry a signature and an SBOM each (OCI 1.1 referrers), with and without
`--no-referrers`, against two real local registries — the source behind the OCI 1.1 personality (the
referrers API over distribution 2.8), the target a bare distribution 2.8 (fallback tags).

    .venv/bin/python bench/artifacts_bench.py [--images 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tools.imagefactory import DOCKER_MANIFEST, make_layer, push_attached, push_image  # noqa: E402

from harness import start_registry  # noqa: E402
from personalities.referrers import ReferrersRegistry  # noqa: E402


def sync(work: Path, source: str, dest: str, *extra: str) -> tuple[float, int, int]:
    work.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    env = {"DOCKER_CONFIG": str(work / "nodocker"), "XDG_CACHE_HOME": str(work / "cache"),
           "XDG_DATA_HOME": str(work / "data"), "XDG_STATE_HOME": str(work / "state"), "PATH": "/usr/bin:/bin",
           "HOME": str(work)}
    started = time.perf_counter()
    command = [sys.executable, "-m", "gcrsync", "-q", "sync", source, "--dest", dest, "--report", str(report),
               "--metadata", str(work / "meta"), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    wall = time.perf_counter() - started
    totals = json.loads(report.read_text())["totals"]
    return wall, int(totals["requests"]), int(totals["artifacts_copied"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        src_reg, dst_reg = start_registry(base / "src"), start_registry(base / "dst")
        try:
            with ReferrersRegistry(src_reg.url) as src:
                for i in range(args.images):
                    repo = f"ns/app{i:02d}"
                    digest, raw = push_image(src.pusher(), repo, "v1", layers=[make_layer(9000 + i, 64_000)])
                    subject = {"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(raw)}
                    for kind in ("sig", "sbom"):
                        push_attached(src.pusher(), repo, kind, subject, seed=9000 + i)
                rows = []
                for label, extra in (("with artifacts", ()), ("--no-referrers", ("--no-referrers",))):
                    cold, noop = [], []
                    for run in range(args.runs):
                        work = base / f"w-{label[:4]}-{run}"
                        dest = f"{dst_reg.host}/m{run}{'n' if extra else 'a'}"
                        cold.append(sync(work, f"{src.host}/ns", dest, *extra))
                        noop.append(sync(work, f"{src.host}/ns", dest, *extra))
                    rows.append((label, cold, noop))
        finally:
            src_reg.stop()
            dst_reg.stop()
    print(f"{args.images} images, each with a signature and an SBOM (referrers API at the source, fallback tags"
          f" at the target); median of {args.runs} runs\n")
    print("| mode | cold: wall s | cold: requests | artifacts copied | no-op: wall s | no-op: requests |")
    print("|---|---|---|---|---|---|")
    for label, cold, noop in rows:
        print(f"| {label} | {statistics.median(c[0] for c in cold):.2f} | {statistics.median(c[1] for c in cold):.0f}"
              f" | {statistics.median(c[2] for c in cold):.0f} | {statistics.median(n[0] for n in noop):.2f}"
              f" | {statistics.median(n[1] for n in noop):.0f} |")


if __name__ == "__main__":
    main()
