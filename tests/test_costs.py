"""What a sync costs in requests: HEADs for unchanged tags, one mount per target repository and blob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.imagefactory import make_layer, push_image

from harness import RegistryServer, unique_repo
from test_sync import run_sync


def test_one_mount_per_target_repository_and_blob_under_load(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("mounts")
    shared = make_layer(211, 40_000)
    pusher = registry.pusher()
    for name in ("a", "b", "c"):
        for i in range(5):
            push_image(pusher, f"{ns}/{name}", f"v{i}", layers=[shared, make_layer(hash((name, i)) % 9999, 300)])
    shared_digest = "sha256:" + __import__("hashlib").sha256(shared).hexdigest()
    registry.clear_requests()
    # Source and target on one registry, every image at once: each target repository gets the shared
    # blob by exactly one mount, never several identical mounts racing each other.
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"{registry.host}/{ns}-m",
                                 "--jobs", "16")
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 15}
    mounts: dict[str, int] = {}
    for r in registry.requests():
        if r.method == "POST" and f"mount={shared_digest}" in r.path:
            repo = r.path.split("/v2/", 1)[1].split("/blobs/", 1)[0]
            mounts[repo] = mounts.get(repo, 0) + 1
    assert mounts == {f"{ns}-m/a": 1, f"{ns}-m/b": 1, f"{ns}-m/c": 1}


def test_unchanged_tags_cost_one_tags_list_per_target_repository_by_default(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("trust")
    pusher = registry.pusher()
    for repo in ("app", "db"):
        for tag in ("v1", "v2", "v3"):
            push_image(pusher, f"{ns}/{repo}", tag, layers=[make_layer(hash((repo, tag)) % 997, 400)])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m")
    assert run_sync(tmp_path, *args)[0] == 0

    def manifest_requests(server: RegistryServer) -> list[str]:
        return sorted(r.method for r in server.requests() if "/manifests/" in r.path)

    def tag_lists(server: RegistryServer) -> list[str]:
        return sorted(r.path.split("/v2/", 1)[1].split("/tags/", 1)[0] for r in server.requests()
                      if "/tags/list" in r.path)

    # default (presence from one tags/list per target repository), a full verification on demand (a HEAD
    # per tag), and --trust-ledger (no target request at all)
    for extra, target_heads, target_lists in (((), [], ["m/app", "m/db"]),
                                              (("--verify-target",), ["HEAD"] * 6, []),
                                              (("--trust-ledger",), [], [])):
        registry.clear_requests()
        target.clear_requests()
        code, out, report = run_sync(tmp_path, *args, *extra)
        assert code == 0, out
        assert report["totals"]["states"] == {"unchanged": 6}
        assert manifest_requests(registry) == ["HEAD"] * 6  # a listing without digests: one per tag at the source
        assert manifest_requests(target) == target_heads
        assert tag_lists(target) == target_lists
