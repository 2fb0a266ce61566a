"""Destructive and partial runs end to end (issue 9): the real CLI, real registries, the default metadata repo.

A vanished listing, a prune next to a mirrored index, a new --dest with a trusted ledger, a SIGTERM in the
middle of a run: each is a case where the tool used to lose or skip something while exiting 0.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tools.imagefactory import make_layer, push_image, push_index

from faultproxy import FaultProxy
from gcrsync.config import MaxRemoved
from harness import RegistryServer, skopeo_copy_all, skopeo_digest, unique_repo
from test_metadata_e2e import (  # noqa: F401  (procs: a fixture)
    Gcrsync,
    proc_output,
    procs,
    seed,
    target_head,
    wait_for,
)

DEADLINE = 60.0


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git config may influence the default metadata repository these runs commit to."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GCRSYNC_SRC_CREDS", "GCRSYNC_DEST_CREDS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def gcrsync(tmp_path: Path) -> Gcrsync:
    return Gcrsync(tmp_path)


def ledger(tmp_path: Path, source_host: str, ns: str) -> dict[str, str]:
    """"repo:tag" → digest of the namespace's ledger in the default metadata repository."""
    path = tmp_path / "data" / "gcrsync" / "metadata" / f"{source_host}/{ns}.json"
    doc = json.loads(path.read_text())
    return {f"{repo}:{tag}": e["digest"] for repo, tags in doc["images"].items() for tag, e in tags.items()}


def changelog(tmp_path: Path) -> str:
    return (tmp_path / "data" / "gcrsync" / "metadata" / "CHANGELOG.md").read_text()


def repositories_dir(server: RegistryServer) -> Path:
    return server.storage / "docker" / "registry" / "v2" / "repositories"


def untag(server: RegistryServer, repo: str, tag: str) -> None:
    """Take a tag away at the source without deleting its manifest (distribution has no tag DELETE)."""
    shutil.rmtree(repositories_dir(server) / repo / "_manifests" / "tags" / tag)


# -- 1. a vanished listing ------------------------------------------------------------------------------------
def test_a_vanished_namespace_removes_and_prunes_nothing(registry: RegistryServer, make_registry: Any,
                                                         gcrsync: Gcrsync, tmp_path: Path) -> None:
    ns = unique_repo("vanish")
    expected = seed(registry, ns, ["app", "db"], ["v1", "v2"])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--prune")
    assert gcrsync.sync(*args).code == 0
    shutil.rmtree(repositories_dir(registry) / ns)  # the source now lists nothing under the namespace
    removals_before = changelog(tmp_path).count("### Removed upstream")
    run = gcrsync.sync(*args)
    assert run.code == 1, run.output
    assert "lists no images, but its ledger holds 4" in run.output and "Traceback" not in run.output
    assert run.report["namespaces"][0]["error"]
    assert ledger(tmp_path, registry.host, ns) == expected
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert target_head(target, f"m/{name}", tag) == digest
    assert changelog(tmp_path).count("### Removed upstream") == removals_before == 0
    # Told that the namespace really is gone, the run records and prunes it all.
    run = gcrsync.sync(*args, "--max-removed", "100%")
    assert run.code == 0, run.output
    assert ledger(tmp_path, registry.host, ns) == {}
    assert all(target_head(target, f"m/{k.split(':')[0]}", k.split(":")[1]) is None for k in expected)


def test_a_vanished_repository_is_an_error_and_kept(registry: RegistryServer, make_registry: Any,
                                                    gcrsync: Gcrsync, tmp_path: Path) -> None:
    ns = unique_repo("vanrepo")
    expected = seed(registry, ns, ["a", "b", "c", "d", "e"], ["v1"]) | seed(registry, ns, ["a"], ["v2"])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--prune", "--max-removed", "50%")
    assert gcrsync.sync(*args).code == 0
    shutil.rmtree(repositories_dir(registry) / ns / "e")
    untag(registry, f"{ns}/a", "v2")
    run = gcrsync.sync(*args)
    assert run.code == 1, run.output
    assert "repository e vanished from the listing" in run.output
    assert [i["state"] for i in run.report["images"] if i["target"].endswith("/m/e:v1")] == ["error"]
    assert ledger(tmp_path, registry.host, ns) == expected
    assert target_head(target, "m/e", "v1") == expected["e:v1"]
    # ... and a namespace in doubt prunes nothing else either.
    [removed] = [i for i in run.report["images"] if i["planned"] == "removed"]
    assert removed["error"] == "not pruned: an image or tag of this namespace failed in this run"
    assert target_head(target, "m/a", "v2") == expected["a:v2"]


def test_removal_guard_counts_and_percentages(registry: RegistryServer, make_registry: Any, gcrsync: Gcrsync,
                                              tmp_path: Path) -> None:
    ns = unique_repo("guard")
    expected = seed(registry, ns, ["app"], ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--prune")
    assert gcrsync.sync(*args).code == 0
    for tag in ("t1", "t2", "t3"):
        untag(registry, f"{ns}/app", tag)
    # 3 of 8 is more than 25%: held, nothing pruned, the numbers and the override in the summary.
    run = gcrsync.sync(*args)
    assert run.code == 1, run.output
    assert "3 of its 8 ledger entries" in run.output and "limit 25%" in run.output
    assert run.report["totals"]["states"]["held"] == 3
    assert ledger(tmp_path, registry.host, ns) == expected
    assert target_head(target, "m/app", "t1") == expected["app:t1"]
    assert gcrsync.sync(*args, "--max-removed", "2").code == 1  # a count: 3 > 2
    run = gcrsync.sync(*args, "--max-removed", "3")
    assert run.code == 0, run.output
    assert sorted(ledger(tmp_path, registry.host, ns)) == [f"app:t{i}" for i in range(4, 9)]
    assert target_head(target, "m/app", "t1") is None and target_head(target, "m/app", "t4") == expected["app:t4"]


@pytest.mark.parametrize(("value", "where"), [("abc", "--max-removed"), ("101%", "--max-removed"),
                                              ("-1", "--max-removed")])
def test_bad_max_removed_is_one_line(value: str, where: str, gcrsync: Gcrsync) -> None:
    run = gcrsync.sync("127.0.0.1:1/x", "--dest", "127.0.0.1:1/y", "--max-removed", value)
    assert run.code == 2, run.output
    assert run.output.startswith(f"error: {where}") and len(run.output.strip().splitlines()) == 1


def test_max_removed_in_the_config(gcrsync: Gcrsync, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("version: 1\ndefaults:\n  max_removed: lots\n")
    run = gcrsync.sync("-c", str(config))
    assert run.code == 2 and f"{config}:3: defaults.max_removed" in run.output and "Traceback" not in run.output
    assert MaxRemoved("25%").allows(1, 4) and not MaxRemoved("25%").allows(2, 4)
    assert not MaxRemoved(10).allows(3, 3) and MaxRemoved("100%").allows(3, 3)  # never all, unless 100%


# -- 2. prune next to a mirrored index ------------------------------------------------------------------------
def test_prune_keeps_a_child_of_a_mirrored_index(registry: RegistryServer, make_registry: Any, gcrsync: Gcrsync,
                                                 tmp_path: Path) -> None:
    ns = unique_repo("pruneidx")
    pusher = registry.pusher()
    index = push_index(pusher, f"{ns}/app", "v1", [("linux", "amd64", None), ("linux", "arm64", None)], 800,
                       seed=301)
    child = json.loads(pusher.get_manifest(f"{ns}/app", index)[0])["manifests"][0]
    raw, media_type = pusher.get_manifest(f"{ns}/app", child["digest"])
    pusher.push_manifest(f"{ns}/app", "v1-amd64", raw, media_type)
    other = seed(registry, ns, ["other"], ["v1"])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--prune", "--max-removed", "50%")
    assert gcrsync.sync(*args).code == 0
    assert target_head(target, "m/app", "v1-amd64") == child["digest"]
    untag(registry, f"{ns}/app", "v1-amd64")
    target.clear_requests()
    run = gcrsync.sync(*args)
    assert run.code == 0, run.output
    assert ledger(tmp_path, registry.host, ns) == {"app:v1": index, **other}
    gets = {r.path.split("/manifests/")[0] for r in target.requests() if r.method == "GET" and "/manifests/" in r.path}
    # The child is still there for the index, which stays complete: skopeo copies every platform of it.
    assert target.pusher().request("HEAD", f"/v2/m/app/manifests/{child['digest']}", repo="m/app").status == 200
    check = unique_repo("check")
    skopeo_copy_all(target.ref("m/app", "v1"), registry.ref(check, "v1"))
    assert skopeo_digest(registry.ref(check, "v1")) == index
    # What prune reads costs requests only in the repository it prunes in (manifest GETs count as pulls).
    assert gets == {"/v2/m/app"}


def test_prune_leaves_a_tag_someone_re_pointed(registry: RegistryServer, make_registry: Any, gcrsync: Gcrsync,
                                               tmp_path: Path) -> None:
    ns = unique_repo("repoint")
    seed(registry, ns, ["app"], ["keep", "gone"])
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", "--prune", "--max-removed", "50%")
    assert gcrsync.sync(*args).code == 0
    theirs, _ = push_image(target.pusher(), "m/app", "gone", layers=[make_layer(311, 600)])
    untag(registry, f"{ns}/app", "gone")
    run = gcrsync.sync(*args)
    assert run.code == 0, run.output
    assert "not pruning" in run.output and target_head(target, "m/app", "gone") == theirs
    assert list(ledger(tmp_path, registry.host, ns)) == ["app:keep"]


# -- 3. a new target with a trusted ledger ---------------------------------------------------------------------
@pytest.mark.parametrize("trust", [["--trust-ledger"], ["--immutable", "v.*"]])
def test_a_new_dest_is_copied_whatever_the_ledger_says(registry: RegistryServer, make_registry: Any,
                                                       gcrsync: Gcrsync, tmp_path: Path, trust: list[str]) -> None:
    ns = unique_repo("newdest")
    expected = seed(registry, ns, ["app", "db"], ["v1"])
    first: RegistryServer = make_registry()
    second: RegistryServer = make_registry()
    assert gcrsync.sync(f"{registry.host}/{ns}", "--dest", f"{first.host}/m", *trust).code == 0
    run = gcrsync.sync(f"{registry.host}/{ns}", "--dest", f"{second.host}/n", *trust)
    assert run.code == 0, run.output
    assert run.report["totals"]["states"] == {"copied": 2}
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert skopeo_digest(second.ref(f"n/{name}", tag)) == digest
    doc = json.loads((tmp_path / "data/gcrsync/metadata" / f"{registry.host}/{ns}.json").read_text())
    assert doc["images"]["app"]["v1"]["target"] == f"{second.host}/n/app:v1"
    # ... and the next run against it is a no-op again.
    run = gcrsync.sync(f"{registry.host}/{ns}", "--dest", f"{second.host}/n", *trust)
    assert run.code == 0 and run.report["totals"]["states"] == {"unchanged": 2}


# -- 4. SIGTERM in the middle of a run -------------------------------------------------------------------------
def test_sigterm_mid_run_finishes_in_flight_reports_pending_and_prunes_nothing(
    registry: RegistryServer, make_registry: Any, gcrsync: Gcrsync, tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    ns = unique_repo("sigterm")
    old = seed(registry, ns, ["old"], ["v1"])
    target: RegistryServer = make_registry()
    with FaultProxy(registry.url) as proxy:
        args = (f"{proxy.host}/{ns}", "--dest", f"{target.host}/m", "--prune", "--max-removed", "100%",
                "--jobs", "1")
        assert gcrsync.sync(*args).code == 0
        seed(registry, ns, ["a", "b", "c", "d", "e"], ["v1"])
        shutil.rmtree(repositories_dir(registry) / ns / "old")  # a removal a prune would act on
        proxy.hold_next("GET", r"/blobs/")  # the first image's first blob: an image in flight
        report = tmp_path / "sigterm-report.json"
        # --every: an interrupted run ends the loop too (no waiting for the next run).
        proc = gcrsync.spawn("sync", *args, "--report", str(report), "--every", "24h")
        procs.append(proc)
        wait_for(proxy.held.is_set, "a blob download in flight", proc)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM" in proc_output(proc), "the signal to be taken", proc)
        proxy.release()
        assert proc.wait(timeout=DEADLINE) == 3, proc_output(proc)
        metrics = tmp_path / "gcrsync.prom"
        monitor = gcrsync.run("monitor", *args[:3], "--count", "1", "--metrics", str(metrics))
        assert monitor.code == 0 and "4 left pending by an interrupted last run" in monitor.output, monitor.output
    output = proc_output(proc)
    assert "Traceback" not in output and "4 pending (interrupted)" in output
    doc = json.loads(report.read_text())
    states = {i["target"].rsplit("/", 1)[1]: i["state"] for i in doc["images"]}
    assert sorted(states.values()) == ["copied", "pending", "pending", "pending", "pending", "removed"]
    assert doc["interrupted"] is True
    copied = next(k for k, v in states.items() if v == "copied")
    removed = next(i for i in doc["images"] if i["state"] == "removed")
    assert removed["error"] == "not pruned: the run was interrupted"
    assert target_head(target, "m/old", "v1") == old["old:v1"]
    recorded = ledger(tmp_path, proxy.host, ns)
    assert sorted(recorded) == sorted(["old:v1", copied])
    assert f"m/{copied}" in changelog(tmp_path)
    label = f'namespace="{proxy.host}/{ns}",state="pending_last_run"'
    assert f"gcrsync_tags{{{label}}} 4" in metrics.read_text()  # monitor's metrics tell them too



def test_no_prune_in_a_namespace_where_an_image_failed(make_registry: Any, gcrsync: Gcrsync,
                                                       tmp_path: Path) -> None:
    source: RegistryServer = make_registry()
    ns = unique_repo("failprune")
    expected = seed(source, ns, ["app"], ["keep", "gone"])
    target: RegistryServer = make_registry()
    args = (f"{source.host}/{ns}", "--dest", f"{target.host}/m", "--prune", "--max-removed", "50%")
    assert gcrsync.sync(*args).code == 0
    untag(source, f"{ns}/app", "gone")
    _, raw = push_image(source.pusher(), f"{ns}/bad", "v1", layers=[make_layer(321, 3_000)])
    digest = json.loads(raw)["layers"][0]["digest"].split(":")[1]
    blob = source.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob.write_bytes(bytes([blob.read_bytes()[0] ^ 1]) + blob.read_bytes()[1:])  # a source serving bad bytes
    run = gcrsync.sync(*args)
    assert run.code == 1, run.output
    [removed] = [i for i in run.report["images"] if i["planned"] == "removed"]
    assert removed["error"] == "not pruned: an image or tag of this namespace failed in this run"
    assert target_head(target, "m/app", "gone") == expected["app:gone"]
    assert ledger(tmp_path, source.host, ns) == expected  # kept: the next good run prunes it


def test_sigterm_gives_up_a_stalled_image_after_the_grace_period(
    registry: RegistryServer, make_registry: Any, gcrsync: Gcrsync, tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    ns = unique_repo("grace")
    seed(registry, ns, ["stuck"], ["v1"])
    target: RegistryServer = make_registry()
    with FaultProxy(registry.url) as proxy:
        proxy.hold_next("GET", r"/blobs/")  # a source that never answers this blob GET while the test runs
        report = tmp_path / "grace-report.json"
        proc = gcrsync.spawn("sync", f"{proxy.host}/{ns}", "--dest", f"{target.host}/m", "--stop-grace", "1s",
                             "--report", str(report))
        procs.append(proc)
        wait_for(proxy.held.is_set, "the stalled blob download", proc)
        proc.send_signal(signal.SIGTERM)
        # Ends on its own although the request never completes: the grace period bounds the stop.
        assert proc.wait(timeout=DEADLINE) == 3, proc_output(proc)
    output = proc_output(proc)
    assert "gave up on" in output and "1 pending (interrupted)" in output and "Traceback" not in output
    doc = json.loads(report.read_text())
    assert [i["state"] for i in doc["images"]] == ["pending"]
    assert target_head(target, "m/stuck", "v1") is None
