"""Sharded syncs end to end: N `gcrsync sync --shard I/N` processes at once, real registries, one bare git remote.

The shards share one XDG cache (one machine): each keeps its own metadata clone (its lock would otherwise
make them wait) and they share the blob-location hints.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from tools.imagefactory import derive_seed, make_layer, push_image

from faultproxy import FaultProxy
from gcrsync.engine.blobs import PEER_MIN_SIZE, PEER_TRIES, BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from gcrsync.sync.shard import preferred
from harness import RegistryServer, unique_repo
from test_metadata_e2e import (
    DEADLINE,
    Gcrsync,
    bare_remote,
    cli,  # noqa: F401  (fixture)
    commits,
    git,
    isolated_git,  # noqa: F401  (autouse fixture)
    proc_output,
    procs,  # noqa: F401  (fixture)
    remote_ledger,
    seed,
    show,
    target_head,
    wait_for,
)

N = 3
NAMES = [f"r{i}" for i in range(9)]


def shard_of(cli: Gcrsync, args: tuple[str, ...]) -> dict[str, int]:
    """repository → shard, as `gcrsync plan --shards N --json` prints it."""
    run = cli.run("plan", *args, "--shards", str(N), "--json")
    assert run.code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["weighed_by"] == "tags" and sum(s["tags"] for s in doc["per_shard"]) == sum(
        r["tags"] for r in doc["repositories"])
    return {r["repository"]: r["shard"] for r in doc["repositories"]}


def manifest_puts(server: RegistryServer, dest: str) -> dict[str, int]:
    """"repo:tag" → tagged manifest PUTs the target logged under dest/ (a copy pushes its tag exactly once)."""
    out: dict[str, int] = {}
    for req in server.requests():
        m = re.match(rf"^/v2/{re.escape(dest)}/(.+)/manifests/([^/]+)$", req.path)
        if req.method == "PUT" and m and not m.group(2).startswith("sha256:") and req.status == 201:
            key = f"{m.group(1)}:{m.group(2)}"
            out[key] = out.get(key, 0) + 1
    return out


def comparable(ledger: dict[str, dict[str, Any]], dest: str) -> dict[str, tuple[Any, ...]]:
    return {k: (e["digest"], e.get("media_type"), e["target"].replace(dest, "DEST")) for k, e in ledger.items()}


def test_three_shards_at_once_equal_one_run_and_a_killed_shard_redoes_only_its_share(
        registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    ns, single_dest, dest = unique_repo("shard"), unique_repo("one"), unique_repo("sharded")
    expected = seed(registry, ns, NAMES, ["v1", "v2"])
    # A base layer shared by every repository: pulled by each shard once at most.
    base = make_layer(derive_seed(1, ns, "base"), 1_200_000)  # above PEER_MIN_SIZE: worth a mount attempt
    for name in NAMES:
        expected[f"{name}:v3"], _ = push_image(registry.pusher(), f"{ns}/{name}", "v3",
                                               layers=[base, make_layer(derive_seed(2, ns, name), 500)])
    source = f"{registry.host}/{ns}"
    owners = shard_of(cli, (source, "--dest", f"{registry2.host}/{dest}"))
    assert set(owners) == set(NAMES) and set(owners.values()) == set(range(N))  # every shard has work here

    one_remote = bare_remote(tmp_path / "one.git")
    single = cli.sync(source, "--dest", f"{registry2.host}/{single_dest}", "--metadata", str(one_remote))
    assert single.code == 0, single.output

    remote = bare_remote(tmp_path / "sharded.git")
    registry2.clear_requests()
    registry.clear_requests()
    reports = [tmp_path / f"shard-{i}.json" for i in range(N)]
    for i in range(N):
        procs.append(cli.spawn("sync", source, "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote),
                               "--shard", f"{i}/{N}", "--report", str(reports[i])))
    for proc in procs:
        assert proc.wait(timeout=DEADLINE * 3) == 0, proc_output(proc)
    docs = [json.loads(r.read_text()) for r in reports]
    clones = tmp_path / "cache" / "gcrsync" / "metadata"
    assert all((clones / f"shard-{i}-of-{N}").is_dir() for i in range(N))  # one machine: a clone per shard

    # Each shard planned and copied its own repositories only; together, everything, each image once.
    copied: list[str] = []
    for i, doc in enumerate(docs):
        assert doc["shard"] == f"{i}/{N}"
        for image in doc["images"]:
            repo = image["source"].split(f"/{ns}/", 1)[1].rsplit(":", 1)[0]
            assert owners[repo] == i, image
            assert image["state"] == "copied", image
            copied.append(image["source"])
    assert sorted(copied) == sorted(f"{source}/{k}" for k in expected)
    assert manifest_puts(registry2, dest) == dict.fromkeys(expected, 1)  # no image copied twice
    # The union equals the single-process run: the same target digests, the same ledger.
    for key, digest in expected.items():
        name, tag = key.split(":")
        assert target_head(registry2, f"{dest}/{name}", tag) == digest == target_head(
            registry2, f"{single_dest}/{name}", tag)
    sharded_ledger = remote_ledger(remote, registry, ns)
    assert comparable(sharded_ledger, dest) == comparable(remote_ledger(one_remote, registry, ns), single_dest)
    # One CHANGELOG block per shard, each naming its shard and telling its own images; every image exactly once.
    changelog = show(remote, "CHANGELOG.md")
    headings = [line for line in changelog.splitlines() if line.startswith("## ")]
    assert sorted(h.rsplit("· ", 1)[1] for h in headings) == [f"shard {i}/{N}" for i in range(N)]
    added = [line for line in changelog.splitlines() if line.startswith("- `")]
    assert sorted(line.split("`")[1] for line in added) == sorted(f"{source}/{k}" for k in expected)
    # Cross-shard duplicate pulls, as merge-reports counts them from the shards' reports, are what the source
    # really served more than once (its access log).
    merged = cli.run("merge-reports", *map(str, reports), "--json")
    assert merged.code == 0, merged.output
    counts = json.loads(merged.stdout)
    gets = Counter(r.path.rsplit("/", 1)[1] for r in registry.requests()
                   if r.method == "GET" and r.path.startswith(f"/v2/{ns}/") and "/blobs/sha256:" in r.path)
    assert counts["duplicate_blobs"] == sum(1 for n in gets.values() if n > 1)
    assert counts["bytes_pulled"] - counts["unique_bytes_pulled"] == counts["duplicate_bytes"]
    assert counts["states"] == {"copied": len(expected)} and counts["missing"] == []
    lost = cli.run("merge-reports", str(reports[0]), str(reports[2]))
    assert lost.code == 1 and f"missing: 1/{N}" in lost.output

    # New tags everywhere; shard 1 is killed while its copies hang, the other shards finish.
    for name in NAMES:
        expected[f"{name}:v4"], _ = push_image(registry.pusher(), f"{ns}/{name}", "v4",
                                               layers=[make_layer(derive_seed(3, ns, name), 700)])
    procs.clear()
    with FaultProxy(registry2.url) as proxy:
        proxy.add_fault("stall", methods=("PUT",), path=rf"^/v2/{dest}/.*/manifests/", stall_seconds=120)
        victim = cli.spawn("sync", source, "--dest", f"{proxy.host}/{dest}", "--metadata", str(remote),
                           "--shard", f"1/{N}", "--jobs", "1")
        procs.append(victim)
        for i in (0, 2):
            procs.append(cli.spawn("sync", source, "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote),
                                   "--shard", f"{i}/{N}"))
        wait_for(lambda: proxy.stats.faults["stall"] >= 1, "shard 1 stalled in a copy", victim)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    for proc in procs[1:]:
        assert proc.wait(timeout=DEADLINE * 2) == 0, proc_output(proc)
    mine = {k for k in expected if k.endswith(":v4") and owners[k.split(":")[0]] == 1}
    assert mine and all(target_head(registry2, f"{dest}/{k.split(':')[0]}", "v4") for k in expected
                        if k.endswith(":v4") and k not in mine)
    rerun = cli.sync(source, "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote), "--shard", f"1/{N}")
    assert rerun.code == 0, rerun.output
    done = {i["source"].split(f"/{ns}/", 1)[1] for i in rerun.report["images"] if i["state"] != "unchanged"}
    assert done == mine  # only its own share, and all of it
    assert {i["source"].split(f"/{ns}/", 1)[1].split(":")[0] for i in rerun.report["images"]} == {
        r for r, s in owners.items() if s == 1}
    final = remote_ledger(remote, registry, ns)
    assert {k: e["digest"] for k, e in final.items()} == expected  # complete after all the pushes


def test_a_shard_mounts_a_layer_another_shard_pushed_instead_of_pulling_it(
        registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync, tmp_path: Path) -> None:
    """Shards on separate machines (separate caches: no shared blob-location hints): the second shard finds the
    shared base layer in the repository the first shard copies first, at the target, and mounts it."""
    ns, dest = unique_repo("peer"), unique_repo("peer-m")
    base = make_layer(derive_seed(4, ns, "base"), 1_500_000)
    base_digest = f"sha256:{hashlib.sha256(base).hexdigest()}"
    for name in NAMES[:6]:
        push_image(registry.pusher(), f"{ns}/{name}", "v1", layers=[base, make_layer(derive_seed(5, ns, name), 300)])
    source = f"{registry.host}/{ns}"
    args = (source, "--dest", f"{registry2.host}/{dest}")
    owners = shard_of(cli, args)
    first, second = sorted({s for s in owners.values()})[:2]
    remote = bare_remote(tmp_path / "remote.git")
    one = cli.sync(*args, "--metadata", str(remote), "--shard", f"{first}/{N}", cache="machine-a")
    assert one.code == 0, one.output
    assert one.report["pulled_blobs"].get(base_digest) == len(base)  # the first shard had to pull it
    registry.clear_requests()
    two = cli.sync(*args, "--metadata", str(remote), "--shard", f"{second}/{N}", cache="machine-b")
    assert two.code == 0, two.output
    assert base_digest not in two.report["pulled_blobs"]
    assert two.report["totals"]["blobs_mounted_from_other_shards"] == 1
    assert not [r for r in registry.requests() if r.path.endswith(f"/blobs/{base_digest}")]  # not from the source
    for name, shard in owners.items():
        if shard == second:
            assert target_head(registry2, f"{dest}/{name}", "v1") is not None


def test_n_stale_pushers_merge_one_ledger_entry_by_entry(registry: RegistryServer, registry2: RegistryServer,
                                                         cli: Gcrsync, tmp_path: Path) -> None:
    """A deterministic N-pusher race: every shard works in a clone made before any of them pushed (user work
    trees are never fetched on open), so the 2nd and 3rd pushes are rejected, rebuilt on the remote's tip with
    the namespace's one ledger merged entry by entry, and pushed."""
    ns, dest = unique_repo("stale"), unique_repo("stale-m")
    expected = seed(registry, ns, NAMES, ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    clones = [tmp_path / f"wt-{i}" for i in range(N)]
    for clone in clones:
        git("clone", "-q", str(remote), str(clone))
    runs = [cli.sync(f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(clone),
                     "--shard", f"{i}/{N}") for i, clone in enumerate(clones)]
    assert [r.code for r in runs] == [0] * N, [r.output for r in runs]
    assert ["rebuilding" in r.output for r in runs] == [False, True, True]  # the races really happened
    assert len(commits(remote)) == N
    assert {k: e["digest"] for k, e in remote_ledger(remote, registry, ns).items()} == expected
    changelog = show(remote, "CHANGELOG.md")
    assert changelog.count("\n## ") == N and changelog.count("- `") == len(expected)


def test_removals_are_decided_per_shard_for_its_own_repositories(registry: RegistryServer,
                                                                 registry2: RegistryServer, cli: Gcrsync,
                                                                 tmp_path: Path) -> None:
    ns, dest = unique_repo("rm"), unique_repo("rm-m")
    expected = seed(registry, ns, NAMES, ["v1", "v2", "v3", "v4"])
    source = f"{registry.host}/{ns}"
    args = (source, "--dest", f"{registry2.host}/{dest}")
    owners = shard_of(cli, args)
    remote = bare_remote(tmp_path / "remote.git")
    assert cli.sync(*args, "--metadata", str(remote)).code == 0  # one unsharded run first: the shards share its ledger
    assert sorted(Counter(owners.values()).values()) == [3, 3, 3]  # 9 repositories of 4 tags: 12 entries each
    a = next(r for r, s in owners.items() if s == 0)
    b = next(r for r, s in owners.items() if s == 1)
    tags = registry.storage / "docker/registry/v2/repositories" / ns
    # 1 of shard 0's 12 entries, 3 of shard 1's 12 (25%: more than --max-removed 20% of its share, though only
    # 4 of the namespace's 36). As many tags are pushed, so the weights, hence the split, stay as they were.
    shutil.rmtree(tags / a / "_manifests/tags/v1")
    expected |= seed(registry, ns, [a], ["v5"])
    for tag in ("v1", "v2", "v3"):
        shutil.rmtree(tags / b / "_manifests/tags" / tag)
    expected |= seed(registry, ns, [b], ["v5", "v6", "v7"])
    assert shard_of(cli, args) == owners
    dry = cli.run("sync", *args, "--metadata", str(remote), "--shard", f"0/{N}", "--dry-run", "--json")
    assert dry.code == 0, dry.output
    planned = json.loads(dry.stdout)["images"]
    assert {i["source"].split(f"/{ns}/")[1].split(":")[0] for i in planned} == {r for r, s in owners.items() if s == 0}
    assert [i["source"] for i in planned if i["planned"] == "removed"] == [f"{source}/{a}:v1"]
    zero = cli.sync(*args, "--metadata", str(remote), "--shard", f"0/{N}", "--max-removed", "20%")
    assert zero.code == 0, zero.output
    ledger = remote_ledger(remote, registry, ns)
    assert f"{a}:v1" not in ledger and {f"{b}:v1", f"{b}:v2", f"{b}:v3"} <= set(ledger)  # not shard 0's to decide
    one = cli.sync(*args, "--metadata", str(remote), "--shard", f"1/{N}", "--max-removed", "20%")
    assert one.code == 1 and "would record 3 of its 12 ledger entries" in one.output  # the guard holds per shard
    assert {i["state"] for i in one.report["images"] if i["planned"] in ("removed", "held")} == {"held"}
    assert {f"{b}:v1", f"{b}:v2", f"{b}:v3"} <= set(remote_ledger(remote, registry, ns))
    one = cli.sync(*args, "--metadata", str(remote), "--shard", f"1/{N}", "--max-removed", "100%")
    assert one.code == 0, one.output
    del expected[f"{a}:v1"]
    for tag in ("v1", "v2", "v3"):
        del expected[f"{b}:{tag}"]
    assert {k: e["digest"] for k, e in remote_ledger(remote, registry, ns).items()} == expected
    # A whole repository vanishes from the listing: only the shard it belongs to (its first-ranked one, as no
    # listing weighs it any more) reports it and keeps its entries; the others are not concerned.
    c = next(r for r in NAMES if r not in (a, b))
    shutil.rmtree(tags / c)
    owner = preferred(f"{source}\0{c}", N)
    for i in range(N):
        run = cli.sync(*args, "--metadata", str(remote), "--shard", f"{i}/{N}")
        vanished = f"repository {c} vanished from the listing"
        assert (run.code, vanished in run.output) == ((1, True) if i == owner else (0, False)), run.output
    assert all(f"{c}:{t}" in remote_ledger(remote, registry, ns) for t in ("v1", "v2", "v3", "v4"))


def test_name_collisions_are_refused_in_every_shard_and_plan_prints_the_split(
        registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync, tmp_path: Path) -> None:
    """`a/b` and `a_b` both flatten to `a_b`: refused by every shard, also those that own only one of the two
    (or neither), before anything is pushed."""
    ns, dest = unique_repo("clash"), unique_repo("clash-m")
    seed(registry, ns, ["a/b", "a_b", *NAMES], ["v1"])
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}")
    owners = shard_of(cli, args)
    assert len(set(owners.values())) == N  # so some shard owns at most one of the two
    registry2.clear_requests()
    for i in range(N):
        run = cli.sync(*args, "--metadata", str(tmp_path / f"meta-{i}"), "--shard", f"{i}/{N}")
        assert run.code == 2 and "name collision" in run.output, run.output
    assert not [r for r in registry2.requests() if r.method in ("PUT", "POST", "PATCH")]
    text = cli.run("plan", *args, "--shards", str(N), "--repos")
    assert text.code == 0, text.output
    lines = text.output.splitlines()
    assert "balance (max/mean): tags" in text.output and "weighed by tag count" in text.output
    for repo, shard in owners.items():
        assert f"{shard}  {registry.host}/{ns}/{repo}  1 tags" in lines


async def test_peer_mount_attempts_are_capped_per_blob(registry: RegistryServer, registry2: RegistryServer) -> None:
    """With many shards, a layer no peer holds costs PEER_TRIES mount attempts, not one per shard; a layer
    below PEER_MIN_SIZE none."""
    repo, dest = unique_repo("cap"), unique_repo("cap-m")
    big, small = make_layer(derive_seed(6, repo), PEER_MIN_SIZE + 1), make_layer(derive_seed(7, repo), 1_000)
    push_image(registry.pusher(), repo, "v1", layers=[big, small])
    peers = {registry2.host: [unique_repo("peer") for _ in range(7)]}  # 7 other shards, none holding anything
    registry2.clear_requests()
    async with Transport(TransportOptions()) as transport:
        client = RegistryClient(transport, CredentialStore(use_docker_config=False))
        mover = BlobMover(peers=peers)
        result = await copy_image(client.repository(registry.host, repo), "v1",
                                  client.repository(registry2.host, dest), "v1", mover)
    assert result.blobs_copied == 3 and mover.peer_mounts == 0  # config, two layers
    mounts = [r for r in registry2.requests() if r.method == "POST" and "mount=" in r.path]
    assert len(mounts) == PEER_TRIES
    assert all(f"mount=sha256:{hashlib.sha256(big).hexdigest()}" in r.path for r in mounts)
