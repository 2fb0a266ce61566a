"""Issue 10: what a no-op costs at a Docker Hub target whose API listing carries digests, against the
HEAD-per-tag full verification. 2,000 tags (20 repositories x 100 tags) mirrored from an Artifact
Registry-style source (digests in its listing, so the source side is a few listing requests) into a real
registry fronted by the Docker Hub API personality (tests/personalities/dockerhub.py).

    .venv/bin/python bench/hub_target_bench.py [--repos 20] [--tags 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tools.imagefactory import DOCKER_MANIFEST, make_layer, push_image  # noqa: E402

from harness import start_registry  # noqa: E402
from personalities.artifactregistry import ArtifactRegistry  # noqa: E402
from personalities.dockerhub import DockerHubApi  # noqa: E402


def sync(work: Path, config: dict[str, object], *args: str) -> tuple[float, int]:
    work.mkdir(parents=True, exist_ok=True)
    path, report = work / "config.yaml", work / "report.json"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    env = {"DOCKER_CONFIG": str(work / "nodocker"), "XDG_CACHE_HOME": str(work / "cache"), "HOME": str(work),
           "XDG_DATA_HOME": str(work / "data"), "XDG_STATE_HOME": str(work / "state"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "gcrsync", "-q", "sync", *args, "-c", str(path), "--report", str(report),
               "--metadata", str(work / "meta")]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - started, int(json.loads(report.read_text())["totals"]["requests"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100)
    args = parser.parse_args()
    total = args.repos * args.tags
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        src, dst = start_registry(base / "src"), start_registry(base / "dst")
        try:
            for r in range(args.repos):
                _, raw = push_image(src.pusher(), f"app{r:02d}", "t000", layers=[make_layer(7000 + r, 2_000)])
                for t in range(1, args.tags):
                    src.pusher().push_manifest(f"app{r:02d}", f"t{t:03d}", raw, DOCKER_MANIFEST)
            with ArtifactRegistry(src.url) as ar, DockerHubApi(dst.url, users={"bench": "pat"}) as hub:
                hub_cfg = {"registries": {dst.host: {"api": hub.url, "discovery": "dockerhub", "username": "bench",
                                                     "password": "pat"}}}
                plain_cfg: dict[str, object] = {"registries": {dst.host: {}}}
                work = base / "work"
                cmd = (ar.host, "--discovery", "gcr", "--dest", f"{dst.host}/mirror", "--no-referrers")
                sync(work, hub_cfg, *cmd)  # cold
                source_side = args.repos + 1  # the gcr-style listing: the root and one per repository
                rows = []
                for label, config, extra in (
                    ("full verification, HEAD per tag (no listing digests)", plain_cfg, ("--verify-target",)),
                    ("full verification, Docker Hub API listing", hub_cfg, ("--verify-target",)),
                    ("default (presence from tags/list + ledger)", plain_cfg, ()),
                    ("default, Docker Hub API listing", hub_cfg, ()),
                ):
                    wall, requests = sync(work, config, *cmd, *extra)
                    rows.append((label, wall, requests - source_side))
        finally:
            src.stop()
            dst.stop()
    print(f"no-op of {total} tags ({args.repos} repositories) into a Docker Hub-like target\n")
    print("| mode | wall s | target requests | per tag |")
    print("|---|---|---|---|")
    for label, wall, target in rows:
        print(f"| {label} | {wall:.2f} | {target} | {target / total:.3f} |")


if __name__ == "__main__":
    main()
