"""`make demo`: the main job, offline, on embedded defaults.

Starts a local source registry (the CNCF distribution registry from Debian's docker-registry package) on
127.0.0.1, fills a small namespace (nested repositories, multi-arch images, shared layers), then:
  1. `gcrsync copy` of one image to an OCI layout and to a second local registry;
  2. `gcrsync sync --dry-run` of the whole namespace (the plan);
  3. `gcrsync sync` to the target registry, recording a ledger + CHANGELOG in a local git metadata repo;
  4. a no-op re-run (nothing copied, HEAD requests only);
  5. a tag moved at the source, and the run that re-syncs exactly that tag;
  6. `gcrsync compare` and `gcrsync monitor --count 1`;
and shows the CHANGELOG and the ledger. Everything lives under .demo/ and is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tools.imagefactory import make_layer, push_image, push_index  # noqa: E402

from harness import start_registry  # noqa: E402

WORK = ROOT / ".demo"
GCRSYNC = str(Path(sys.executable).parent / "gcrsync")


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m", flush=True)


def run(*args: str, env: dict[str, str], check: bool = True) -> None:
    print("$ gcrsync " + " ".join(args), flush=True)
    proc = subprocess.run([GCRSYNC, *args], env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {proc.returncode}")


def seed(source_url: str, pusher_factory: object) -> None:
    pusher = pusher_factory()  # type: ignore[operator]
    base = make_layer(1, 2 * 1024 * 1024)  # a "base image" layer shared by every repository
    names = ["pause", "kube-proxy", "etcd", "addons/dns", "addons/metrics/server"]
    for i, name in enumerate(names):
        for j, tag in enumerate(["v1.0.0", "v1.1.0", "latest"]):
            push_image(pusher, f"google-containers/{name}", tag,
                       layers=[base, make_layer(100 + i * 10 + j, 256 * 1024)])
    for tag, seed_ in (("3.9", 7), ("3.10", 8)):
        push_index(pusher, "google-containers/busybox", tag,
                   [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")], 512 * 1024, seed_)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    env = dict(os.environ, XDG_DATA_HOME=str(WORK / "data"), XDG_CACHE_HOME=str(WORK / "cache"),
               XDG_STATE_HOME=str(WORK / "state"), DOCKER_CONFIG=str(WORK / "docker"))
    source = start_registry(WORK / "source")
    target = start_registry(WORK / "target")
    try:
        banner(f"source registry {source.host} (gcr.io stand-in), target registry {target.host}")
        seed(source.url, source.pusher)
        src_ns = f"{source.host}/google-containers"
        dest = f"{target.host}/gcrxio"
        meta = WORK / "metadata.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(meta)], check=True)

        banner("1. copy one multi-arch image, byte for byte, to an OCI layout and to a registry")
        run("copy", f"{src_ns}/busybox:3.9", f"oci:{WORK / 'layout'}:3.9", env=env)
        run("copy", f"{src_ns}/busybox:3.9", f"{target.host}/scratch/busybox:3.9", "--platform", "linux/arm64",
            env=env)

        banner("2. list the namespace, then plan the sync (dry run: nothing changes)")
        run("list", src_ns, env=env)
        run("sync", src_ns, "--dest", dest, "--metadata", str(meta), "--dry-run", env=env)

        banner("3. sync the whole namespace; ledger + CHANGELOG committed and pushed to the metadata repo")
        run("sync", src_ns, "--dest", dest, "--metadata", str(meta), "--report", str(WORK / "report.json"), env=env)

        banner("4. run again: nothing changed, nothing copied, no commit")
        run("sync", src_ns, "--dest", dest, "--metadata", str(meta), env=env)

        banner("5. 'latest' of kube-proxy is rebuilt upstream: only that tag is re-synced")
        push_image(source.pusher(), "google-containers/kube-proxy", "latest", layers=[make_layer(4242, 300_000)])
        run("sync", src_ns, "--dest", dest, "--metadata", str(meta), env=env)

        banner("6. compare with what the target really holds; monitor once")
        run("compare", src_ns, "--dest", dest, "--metadata", str(meta), env=env, check=False)
        run("monitor", src_ns, "--dest", dest, "--metadata", str(meta), "--count", "1", env=env)

        banner("the metadata repository")
        clone = WORK / "metadata-view"
        subprocess.run(["git", "clone", "-q", "-b", "main", str(meta), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "log", "--oneline"], check=True)
        print((clone / "CHANGELOG.md").read_text()[:2500])
        ledger = next(clone.rglob("google-containers.json"))
        print(f"--- {ledger.relative_to(clone)} (first lines)")
        print("\n".join(ledger.read_text().splitlines()[:24]))
        banner(f"done: everything is under {WORK}")
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
