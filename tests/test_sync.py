"""`gcrsync sync` end to end against real registries: discovery, plan, incremental runs, mounts, naming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image, push_index

from gcrsync.cli import main
from gcrsync.oci import Descriptor, Manifest
from gcrsync.store import ImageStore
from gcrsync.sync.endpoints import Endpoints
from harness import RegistryServer, skopeo_copy_all, skopeo_digest, unique_repo


def run_sync(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = CliRunner().invoke(main, ["sync", *args, "--report", str(report)], env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, result.output, data


def fill_namespace(server: RegistryServer, ns: str, shared: bytes) -> dict[str, str]:
    """~10 repos, some nested, one multi-arch: returns repo:tag → digest."""
    pusher = server.pusher()
    out: dict[str, str] = {}
    names = ["app", "db", "web", "tools/cli", "tools/debug/shell", "base", "proxy", "cache", "queue"]
    for i, name in enumerate(names):
        for j, tag in enumerate(["v1", "latest"]):
            digest, _ = push_image(pusher, f"{ns}/{name}", tag, layers=[shared, make_layer(1000 + i * 10 + j, 4_000)])
            out[f"{name}:{tag}"] = digest
    out["multi:1.0"] = push_index(pusher, f"{ns}/multi", "1.0", [("linux", "amd64", None), ("linux", "arm64", "v8")],
                                  3_000, seed=77)
    return out


def test_namespace_sync_incremental_and_moved_tag(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("ns")
    expected = fill_namespace(registry, ns, make_layer(999, 20_000))
    target: RegistryServer = make_registry()
    dest = f"{target.host}/mirror"
    # Plan only: nothing at the target afterwards.
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", dest, "--dry-run")
    assert code == 0, out
    assert report["totals"]["states"] == {"new": len(expected)}
    assert not [r for r in target.requests() if r.method in ("PUT", "POST")]
    # Cold sync.
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", dest)
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": len(expected)}
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert skopeo_digest(target.ref(f"mirror/{name.replace('/', '_')}", tag)) == digest
    # No-op re-run: copies nothing, and never GETs a manifest at the source (HEADs only).
    registry.clear_requests()
    target.clear_requests()
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", dest)
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": len(expected)}
    assert report["totals"]["bytes_copied"] == 0
    src_gets = [r for r in registry.requests() if r.method == "GET" and "/manifests/" in r.path]
    assert src_gets == []
    assert not [r for r in target.requests() if r.method in ("PUT", "POST", "PATCH")]
    # Move one tag at the source: exactly that tag is copied, reported old → new.
    old = expected["app:latest"]
    new, _ = push_image(registry.pusher(), f"{ns}/app", "latest", layers=[make_layer(4242, 4_000)])
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", dest)
    assert code == 0, out
    copied = [i for i in report["images"] if i["state"] == "copied"]
    assert len(copied) == 1
    assert copied[0]["source"].endswith(f"{ns}/app:latest")
    assert copied[0]["planned"] == "changed"
    assert copied[0]["previous_digest"] == old and copied[0]["digest"] == new
    assert skopeo_digest(target.ref("mirror/app", "latest")) == new


def test_shared_layer_pulled_once_and_mounted(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("shared")
    shared = make_layer(31337, 200_000)
    pusher = registry.pusher()
    for i in range(10):
        push_image(pusher, f"{ns}/r{i}", "v1", layers=[shared, make_layer(500 + i, 1_000)])
    shared_digest = "sha256:" + __import__("hashlib").sha256(shared).hexdigest()
    target: RegistryServer = make_registry()
    registry.clear_requests()
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--jobs", "4")
    assert code == 0, out
    gets = [r for r in registry.requests() if r.method == "GET" and r.path.endswith(f"/blobs/{shared_digest}")]
    assert len(gets) == 1
    mounts = [r for r in target.requests()
              if r.method == "POST" and f"mount={shared_digest}" in r.path and r.status == 201]
    assert len(mounts) == 9
    assert sum(i["blobs_mounted"] for i in report["images"]) >= 9


def _plan(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    code, out, report = run_sync(tmp_path, *args, "--dry-run")
    assert code == 0, out
    return report["images"]


def test_filters_latest_and_naming_modes(registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("filters")
    pusher = registry.pusher()
    for tag in ["v1.0.0", "v1.1.0", "v1.2.0", "v2.0.0", "latest", "nightly-1", "sha256-" + "ab" * 32 + ".sig"]:
        push_image(pusher, f"{ns}/sub/app", tag, layers=[make_layer(hash(tag) % 1000, 500)])
    src = f"{registry.host}/{ns}"
    dest = f"{registry2.host}/mirror"

    def tags(images: list[dict[str, Any]]) -> list[str]:
        return sorted(i["source"].rsplit(":", 1)[1] for i in images)

    assert tags(_plan(tmp_path, src, "--dest", dest)) == ["latest", "nightly-1", "v1.0.0", "v1.1.0", "v1.2.0",
                                                          "v2.0.0"]  # digest tags skipped by default
    assert tags(_plan(tmp_path, src, "--dest", dest, "--include", r"v.*", "--exclude", r"v2\..*")) == [
        "v1.0.0", "v1.1.0", "v1.2.0"]
    assert tags(_plan(tmp_path, src, "--dest", dest, "--semver", ">=1.1 <2")) == ["v1.1.0", "v1.2.0"]
    assert tags(_plan(tmp_path, src, "--dest", dest, "--latest", "2", "--include", r"v.*")) == ["v1.2.0", "v2.0.0"]
    targets = {
        "flatten": f"{dest}/sub_app:latest",
        "preserve": f"{dest}/sub/app:latest",
        "prefix": f"{dest}/127.0.0.1_{registry.port}_{ns}_sub_app:latest",
        "{name}-mirror": f"{dest}/app-mirror:latest",
    }
    for mode, want in targets.items():
        images = _plan(tmp_path, src, "--dest", dest, "--naming", mode, "--include", "latest")
        assert [i["target"] for i in images] == [want], mode


def test_collision_refused_before_any_push(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("coll")
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/a/base", "v1", layers=[make_layer(71, 500)])
    push_image(pusher, f"{ns}/b/base", "v1", layers=[make_layer(72, 500)])
    target: RegistryServer = make_registry()
    code, out, _ = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--naming", "{name}")
    assert code == 2
    assert f"{ns}/a/base" in out and f"{ns}/b/base" in out and "Traceback" not in out
    assert not [r for r in target.requests() if r.method in ("PUT", "POST", "PATCH")]


def test_failed_listing_is_an_error_not_empty(make_registry: Any, tmp_path: Path) -> None:
    dead: RegistryServer = make_registry()
    host = dead.host
    dead.stop()
    code, out, report = run_sync(tmp_path, f"{host}/anything", "--dest", "127.0.0.1:1/x", "--timeout", "2")
    assert code == 1
    assert report["namespaces"][0]["error"]
    assert "listing" in out


def test_sync_to_oci_layout(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("tolayout")
    digest, _ = push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(81, 2_000)], oci=True)
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"oci:{tmp_path / 'mirror'}")
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 1}
    assert skopeo_digest(f"oci:{tmp_path / 'mirror' / 'app'}:v1") == digest


def test_one_failed_image_does_not_stop_others(make_registry: Any, registry2: RegistryServer, tmp_path: Path) -> None:
    source: RegistryServer = make_registry()
    ns = unique_repo("partial")
    good, _ = push_image(source.pusher(), f"{ns}/good", "v1", layers=[make_layer(91, 3_000)])
    _, raw = push_image(source.pusher(), f"{ns}/bad", "v1", layers=[make_layer(92, 3_000)])
    digest = json.loads(raw)["layers"][0]["digest"].split(":")[1]
    blob = source.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.write_bytes(bytes(data))
    code, out, report = run_sync(tmp_path, f"{source.host}/{ns}", "--dest", f"{registry2.host}/{ns}-m")
    assert code == 1, out
    states = {i["source"].split("/")[-1]: i for i in report["images"]}
    assert states["good:v1"]["state"] == "copied" and states["bad:v1"]["state"] == "failed"
    assert "hashes to" in states["bad:v1"]["error"]
    assert skopeo_digest(registry2.ref(f"{ns}-m/good", "v1")) == good
    assert registry2.pusher().request("HEAD", f"/v2/{ns}-m/bad/manifests/v1", repo=f"{ns}-m/bad").status == 404


def test_config_file_sync(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("cfg")
    pusher = registry.pusher()
    push_index(pusher, f"{ns}/multi", "v1", [("linux", "amd64", None), ("linux", "arm64", None)], 2_000, seed=3)
    push_image(pusher, f"{ns}/single", "v1", layers=[make_layer(101, 1_000)], platform=("linux", "arm64", None))
    push_image(pusher, f"{ns}/single", "old", layers=[make_layer(102, 1_000)], platform=("linux", "arm64", None))
    target: RegistryServer = make_registry()
    config = tmp_path / "gcrsync.yaml"
    config.write_text(f"""
version: 1
defaults:
  jobs: 2
  tags:
    exclude: ["old"]
target: {target.host}/mirror
sync:
  - source: {registry.host}/{ns}
    platforms: [linux/arm64]
""")
    code, out, report = run_sync(tmp_path, "-c", str(config))
    assert code == 0, out
    assert sorted(i["target"] for i in report["images"]) == [f"{target.host}/mirror/multi:v1",
                                                             f"{target.host}/mirror/single:v1"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{target.host}/mirror/multi:v1"], capture_output=True, check=True).stdout
    assert [m["platform"]["architecture"] for m in json.loads(raw)["manifests"]] == ["arm64"]
    # A filtered index has a new digest by design; the ledger's source digest keeps the re-run a no-op.
    code, out, report = run_sync(tmp_path, "-c", str(config))
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2}


def test_bad_config_is_one_line_with_line_number(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("version: 1\ndefaults:\n  jobs: many\n")
    code, out, _ = run_sync(tmp_path, "-c", str(config))
    assert code == 2
    assert f"{config}:3" in out and "jobs" in out and "Traceback" not in out


def test_list_command(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("list")
    digest, _ = push_image(registry.pusher(), f"{ns}/deep/app", "v3", layers=[make_layer(111, 500)])
    result = CliRunner().invoke(main, ["list", f"{registry.host}/{ns}", "--json"],
                                env={"DOCKER_CONFIG": str(tmp_path)})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [r["repository"] for r in doc["repositories"]] == [f"{ns}/deep/app"]
    assert list(doc["repositories"][0]["tags"]) == ["v3"]
    assert doc["repositories"][0]["tags"]["v3"]["digest"] is None  # catalog listings carry no digests
    plain = CliRunner().invoke(main, ["list", f"{registry.host}/{ns}"], env={"DOCKER_CONFIG": str(tmp_path)})
    assert f"{registry.host}/{ns}/deep/app:v3\t-" in plain.output and "1 repositories, 1 tags" in plain.output
    # ... so a sync plan learns the digest from the registry itself.
    images = _plan(tmp_path, f"{registry.host}/{ns}", "--dest", f"{registry.host}/{ns}-m")
    assert [i["source_digest"] for i in images] == [digest]


def test_removed_upstream_reported_then_pruned(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    ns = unique_repo("removed")
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/app", "keep", layers=[make_layer(121, 500)])
    gone, _ = push_image(pusher, f"{ns}/app", "gone", layers=[make_layer(122, 500)])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m")
    assert run_sync(tmp_path, *args)[0] == 0
    pusher.delete_manifest(f"{ns}/app", gone)
    # One of two entries is more than the default guard (25%): held, reported, recorded nowhere, exit 1.
    code, out, report = run_sync(tmp_path, *args)
    assert code == 1, out
    assert "removal guard" in out and "1 of its 2 ledger entries" in out and "--max-removed" in out
    assert [i["planned"] for i in report["images"] if i["target"].endswith(":gone")] == ["held"]
    assert report["namespaces"][0]["guard"]
    assert _ledger_tags(tmp_path, ns) == {"app": ["gone", "keep"]}
    code, out, report = run_sync(tmp_path, *args, "--max-removed", "1")
    assert code == 0, out
    removed = [i for i in report["images"] if i["planned"] == "removed"]
    assert [i["target"] for i in removed] == [f"{target.host}/m/app:gone"]
    assert skopeo_digest(target.ref("m/app", "gone")) == gone  # reported, not deleted
    changelog = next((tmp_path / "data").rglob("CHANGELOG.md")).read_text()
    assert "Removed upstream" in changelog and "m/app:gone" in changelog
    # Next run with --prune: the ledger no longer lists it, so a fresh removal is needed to prune.
    gone2, _ = push_image(pusher, f"{ns}/app", "gone2", layers=[make_layer(123, 500)])
    assert run_sync(tmp_path, *args)[0] == 0
    pusher.delete_manifest(f"{ns}/app", gone2)
    code, out, report = run_sync(tmp_path, *args, "--prune", "--max-removed", "50%")
    assert code == 0, out
    assert target.pusher().request("HEAD", "/v2/m/app/manifests/gone2", repo="m/app").status == 404
    assert skopeo_digest(target.ref("m/app", "keep")) == skopeo_digest(registry.ref(f"{ns}/app", "keep"))


def test_original_user_password_flags_for_the_target(registry: RegistryServer, auth_registry: RegistryServer,
                                                     tmp_path: Path) -> None:
    ns = unique_repo("userflag")
    digest, _ = push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(131, 700)])
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "GCRSYNC_PASSWORD": auth_registry.password or ""}
    args = ["sync", f"{registry.host}/{ns}", "--dest", f"{auth_registry.host}/{ns}", "--user", "alice"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert skopeo_digest(auth_registry.ref(f"{ns}/app", "v1"), auth_registry.creds) == digest
    assert (auth_registry.password or "?") not in result.output
    missing = CliRunner().invoke(main, args, env={**env, "GCRSYNC_PASSWORD": ""})
    assert missing.exit_code == 2 and "GCRSYNC_PASSWORD" in missing.output


def test_immutable_tags_cost_no_requests_once_mirrored(registry: RegistryServer, make_registry: Any,
                                                       tmp_path: Path) -> None:
    ns = unique_repo("immut")
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/app", "v1.0.0", layers=[make_layer(141, 600)])
    push_image(pusher, f"{ns}/app", "latest", layers=[make_layer(142, 600)])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--immutable", r"v\d+\.\d+\.\d+")
    assert run_sync(tmp_path, *args)[0] == 0
    registry.clear_requests()
    target.clear_requests()
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2}
    assert not [r for r in registry.requests() if "/manifests/v1.0.0" in r.path]
    assert not [r for r in target.requests() if "/manifests/v1.0.0" in r.path]
    assert [r.method for r in registry.requests() if "/manifests/latest" in r.path] == ["HEAD"]


def test_config_with_a_password_warns_when_world_readable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from gcrsync.config import load_config

    config = tmp_path / "gcrsync.yaml"
    config.write_text("version: 1\nregistries:\n  docker.io:\n    username: me\n    password: hunter2\n")
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        load_config(config)
    assert "readable by all users" in caplog.text and "hunter2" not in caplog.text
    caplog.clear()
    config.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        load_config(config)
    assert caplog.text == ""


def test_sync_to_layouts_hard_links_shared_layers(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("links")
    shared = make_layer(151, 50_000)
    for name in ("a", "b", "c"):
        push_image(registry.pusher(), f"{ns}/{name}", "v1", layers=[shared, make_layer(hash(name) % 999, 500)],
                   oci=True)
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"oci:{tmp_path / 'mirror'}")
    assert code == 0, out
    assert sum(i["blobs_mounted"] for i in report["images"]) == 2  # the shared layer: pulled once, linked twice
    digest = "sha256:" + __import__("hashlib").sha256(shared).hexdigest()
    paths = [tmp_path / "mirror" / name / "blobs/sha256" / digest.split(":")[1] for name in ("a", "b", "c")]
    assert len({p.stat().st_ino for p in paths}) == 1
    for name in ("a", "b", "c"):
        assert skopeo_digest(f"oci:{tmp_path / 'mirror' / name}:v1") == skopeo_digest(
            registry.ref(f"{ns}/{name}", "v1"))


def test_platform_subset_skips_single_platform_images_of_other_platforms(
    registry: RegistryServer, make_registry: Any, tmp_path: Path
) -> None:
    ns = unique_repo("plat1")
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/amd", "v1", layers=[make_layer(161, 500)], platform=("linux", "amd64", None))
    arm, _ = push_image(pusher, f"{ns}/arm", "v1", layers=[make_layer(162, 500)], platform=("linux", "arm64", "v8"))
    push_index(pusher, f"{ns}/multi", "v1", [("linux", "amd64", None), ("linux", "arm64", "v8")], 500, seed=163)
    target: RegistryServer = make_registry()
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"{target.host}/m",
                                 "--platform", "linux/arm64")
    assert code == 0, out
    states = {i["source"].rsplit("/", 1)[1]: i for i in report["images"]}
    assert states["amd:v1"]["state"] == "skipped" and "linux/amd64" in states["amd:v1"]["error"]
    assert states["arm:v1"]["state"] == "copied" and states["multi:v1"]["state"] == "copied"
    assert skopeo_digest(target.ref("m/arm", "v1")) == arm
    assert target.pusher().request("GET", "/v2/m/amd/tags/list", repo="m/amd").status == 404
    assert "1 skipped (platform)" in out
    # The platform of that digest is remembered: the next run skips it without fetching anything.
    registry.clear_requests()
    code, out, report = run_sync(tmp_path, f"{registry.host}/{ns}", "--dest", f"{target.host}/m",
                                 "--platform", "linux/arm64")
    assert code == 0, out
    assert {i["source"].rsplit("/", 1)[1]: i["state"] for i in report["images"]}["amd:v1"] == "skipped"
    assert not [r for r in registry.requests() if r.method == "GET" and f"{ns}/amd/" in r.path
                and ("/manifests/" in r.path or "/blobs/" in r.path)]


def test_json_log_lines(registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("jsonlog")
    push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(201, 500)])
    env = {"DOCKER_CONFIG": str(tmp_path / "d"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-m", "gcrsync", "--log-format", "json", "sync", f"{registry.host}/{ns}",
                           "--dest", f"{registry2.host}/{ns}-m"], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("copied ") for r in records)


def _ledger_tags(tmp_path: Path, ns: str) -> dict[str, list[str]]:
    doc = json.loads(next((tmp_path / "data").rglob(f"{ns}.json")).read_text())
    return {repo: sorted(tags) for repo, tags in doc["images"].items()}


def test_prune_on_an_oci_layout_target(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("ociprune")
    shared = make_layer(171, 30_000)
    pusher = registry.pusher()
    keep, _ = push_image(pusher, f"{ns}/app", "keep", layers=[shared, make_layer(172, 500)], oci=True)
    gone, _ = push_image(pusher, f"{ns}/app", "gone", layers=[shared, make_layer(173, 700)], oci=True)
    layout = tmp_path / "mirror" / "app"
    args = (f"{registry.host}/{ns}", "--dest", f"oci:{tmp_path / 'mirror'}")
    assert run_sync(tmp_path, *args)[0] == 0
    blobs = layout / "blobs" / "sha256"
    before = {p.name for p in blobs.iterdir()}
    doc = json.loads((blobs / gone.split(":")[1]).read_bytes())
    shared_hex = __import__("hashlib").sha256(shared).hexdigest()
    only_gone = {d.split(":")[1] for d in [gone, doc["config"]["digest"], *(x["digest"] for x in doc["layers"])]}
    only_gone.discard(shared_hex)
    assert len(only_gone) == 3 and only_gone <= before and shared_hex in before
    pusher.delete_manifest(f"{ns}/app", gone)
    code, out, report = run_sync(tmp_path, *args, "--prune", "--max-removed", "50%")
    assert code == 0, out
    removed = [i for i in report["images"] if i["planned"] == "removed"]
    assert [(i["target"], i["error"]) for i in removed] == [(f"oci:{layout}:gone", None)]
    index = json.loads((layout / "index.json").read_text())
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] == ["keep"]
    assert {p.name for p in blobs.iterdir()} == before - only_gone  # the shared layer stays for "keep"
    assert _ledger_tags(tmp_path, ns) == {"app": ["keep"]}
    # What is left is complete: skopeo reads it and copies it out, verifying every blob.
    assert skopeo_digest(f"oci:{layout}:keep") == keep
    skopeo_copy_all(f"oci:{layout}:keep", f"oci:{tmp_path / 'copy'}:keep")
    assert skopeo_digest(f"oci:{tmp_path / 'copy'}:keep") == keep


class WithoutRemoval:
    """A target store offering the ImageStore interface and no capability at all (so no RemovesTags)."""

    def __init__(self, inner: ImageStore) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def domain(self) -> str:
        return self.inner.domain

    async def get_manifest(self, ref: str) -> Manifest:
        return await self.inner.get_manifest(ref)

    async def head_manifest(self, ref: str) -> Descriptor | None:
        return await self.inner.head_manifest(ref)

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        await self.inner.put_manifest(ref, manifest)

    async def blob_size(self, digest: str) -> int | None:
        return await self.inner.blob_size(digest)

    def open_blob(self, desc: Descriptor) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.open_blob(desc)

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        await self.inner.put_blob(desc, chunks)

    async def mount_blob(self, desc: Descriptor, source: ImageStore) -> bool:
        return await self.inner.mount_blob(desc, source)


def test_prune_refused_for_a_target_without_remove_tags(registry: RegistryServer, make_registry: Any,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = unique_repo("noprune")
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/app", "keep", layers=[make_layer(181, 500)])
    gone, _ = push_image(pusher, f"{ns}/app", "gone", layers=[make_layer(182, 500)])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m")
    assert run_sync(tmp_path, *args)[0] == 0
    pusher.delete_manifest(f"{ns}/app", gone)
    original = Endpoints.open

    def open_without_removal(self: Endpoints, location: str) -> ImageStore:
        store = original(self, location)
        return WithoutRemoval(store) if location.startswith(target.host) else store

    monkeypatch.setattr(Endpoints, "open", open_without_removal)
    args = (*args, "--max-removed", "50%")
    code, out, report = run_sync(tmp_path, *args, "--prune")
    assert code == 1, out
    message = f"prune is not supported for {target.host}/m/app"
    removed = [i for i in report["images"] if i["planned"] == "removed"]
    assert [(i["target"], i["error"]) for i in removed] == [(f"{target.host}/m/app:gone", message)]
    assert message in out
    assert skopeo_digest(target.ref("m/app", "gone")) == gone  # refused, so still there
    # The ledger keeps listing what the target still holds, so a run that can prune takes it away.
    assert _ledger_tags(tmp_path, ns) == {"app": ["gone", "keep"]}
    monkeypatch.undo()
    code, out, report = run_sync(tmp_path, *args, "--prune")
    assert code == 0, out
    assert target.pusher().request("HEAD", "/v2/m/app/manifests/gone", repo="m/app").status == 404
    assert _ledger_tags(tmp_path, ns) == {"app": ["keep"]}
