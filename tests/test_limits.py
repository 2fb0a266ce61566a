"""Limits a user sets, end to end with the CLI: per-host concurrency, the image deadline, chunked uploads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image, sha256_digest

from faultproxy import FaultProxy
from gcrsync.cli import main
from harness import RegistryServer, skopeo_digest, unique_repo


def run(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    extra = ["--report", str(report)] if args[0] == "sync" else []
    result = CliRunner().invoke(main, [*args, *extra], env=env)
    return result.exit_code, result.output, json.loads(report.read_text()) if report.exists() else {}


def test_max_concurrency_bounds_requests_in_flight_to_a_host(registry: RegistryServer, registry2: RegistryServer,
                                                             tmp_path: Path) -> None:
    ns = unique_repo("cap")
    for i in range(8):
        push_image(registry.pusher(), f"{ns}/r{i}", "v1", layers=[make_layer(600 + i, 30_000)])
    with FaultProxy(registry.url) as proxy:
        config = tmp_path / "c.yaml"
        config.write_text(f"version: 1\nregistries:\n  '{proxy.host}':\n    max_concurrency: 2\n")
        code, out, report = run(tmp_path, "sync", f"{proxy.host}/{ns}", "--dest", f"{registry2.host}/{ns}-m",
                                "-c", str(config), "--jobs", "8", "--query-jobs", "8")
        stats = proxy.stats
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 8}
    assert stats.requests >= 8 * 3  # listing, HEADs, manifest and blob GETs: plenty of chances to overlap
    assert 1 <= stats.max_in_flight <= 2


def test_image_deadline_fails_a_stuck_image_and_lets_the_others_finish(
        registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("deadline")
    slow_layer = make_layer(611, 5_000)
    push_image(registry.pusher(), f"{ns}/slow", "v1", layers=[slow_layer])
    fast, _ = push_image(registry.pusher(), f"{ns}/fast", "v1", layers=[make_layer(612, 5_000)])
    with FaultProxy(registry.url) as proxy:
        proxy.hold_next("GET", f"/blobs/{sha256_digest(slow_layer)}$")  # never answered while the proxy runs
        code, out, report = run(tmp_path, "sync", f"{proxy.host}/{ns}", "--dest", f"{registry2.host}/{ns}-m",
                                "--image-deadline", "2s")
        held = proxy.held.is_set()
    assert held and code == 1, out
    states = {i["source"].rsplit("/", 1)[1]: i for i in report["images"]}
    assert states["fast:v1"]["state"] == "copied"
    assert states["slow:v1"]["state"] == "failed" and "2s deadline" in states["slow:v1"]["error"]
    assert "2s deadline" in out and "Traceback" not in out
    assert skopeo_digest(registry2.ref(f"{ns}-m/fast", "v1")) == fast
    assert registry2.pusher().request("HEAD", f"/v2/{ns}-m/slow/manifests/v1", repo=f"{ns}-m/slow").status == 404


def test_chunked_uploads_when_configured(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    repo = unique_repo("chunked")
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[make_layer(621, 40_000)])
    target: RegistryServer = make_registry()
    config = tmp_path / "c.yaml"
    config.write_text(f"version: 1\nregistries:\n  '{target.host}':\n    chunked_upload: true\n")
    code, out, _ = run(tmp_path, "copy", f"{registry.host}/{repo}:v1", f"{target.host}/{repo}:v1", "-c", str(config))
    assert code == 0, out
    patches = [r for r in target.requests() if r.method == "PATCH" and r.status == 202]
    assert len(patches) == 2  # the config and the layer, one chunk each
    assert skopeo_digest(target.ref(repo, "v1")) == digest


def test_a_413_on_one_big_put_falls_back_to_chunks(registry: RegistryServer, make_registry: Any,
                                                   tmp_path: Path) -> None:
    repo = unique_repo("toolarge")
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[make_layer(631, 60_000)])
    target: RegistryServer = make_registry()
    with FaultProxy(target.url) as proxy:
        proxy.fail_next(1, "413", r"/blobs/uploads/", methods=("PUT",))
        code, out, _ = run(tmp_path, "copy", f"{registry.host}/{repo}:v1", f"{proxy.host}/{repo}:v1")
        faults = proxy.stats.faults["413"]
    assert code == 0, out
    assert faults == 1
    assert [r for r in target.requests() if r.method == "PATCH" and r.status == 202]
    assert skopeo_digest(target.ref(repo, "v1")) == digest
