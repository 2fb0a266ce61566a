"""`gcrsync compare` and `gcrsync monitor` through the real CLI, against real registries and a real git remote."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tools.imagefactory import make_layer, push_image

from faultproxy import FaultProxy
from gcrsync.ledger import MetadataRepo
from harness import MakeRegistry, RegistryServer, unique_repo
from test_metadata_e2e import (  # noqa: F401 - cli and isolated_git are fixtures
    Gcrsync,
    bare_remote,
    cli,
    commits,
    git,
    isolated_git,
    remote_ledger,
    run_blocks,
    seed,
    show,
    target_head,
)

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Strict line-by-line parse of the text exposition format: every sample's metric has HELP and TYPE first,
    labels are well-formed, values are numbers."""
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP "):].partition(" ")
            assert doc.strip(), line
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            assert kind in ("gauge", "counter"), line
            typed.add(name)
        else:
            m = _SAMPLE_RE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            assert name in helped and name in typed, f"{name} sampled before its HELP/TYPE"
            labels = _LABEL_RE.findall(labels_text or "")
            assert ",".join(f'{k}="{v}"' for k, v in labels) == (labels_text or ""), line
            key = (name, frozenset(labels))
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = float(value)
    return samples


def test_compare_write_rebuilds_a_deleted_ledger(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                                 tmp_path: Path) -> None:
    ns, dest = unique_repo("cmpw"), unique_repo("cmpw-m")
    expected = seed(registry, ns, ["app", "tools/cli"], ["v1", "v2"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    ledger_file = f"{registry.host}/{ns}.json"
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other))
    git("rm", "-q", ledger_file, cwd=other)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lose the ledger", cwd=other)
    git("push", "-q", "origin", "HEAD:main", cwd=other)
    assert ledger_file not in git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main")
    # Without --write: the target is fully in sync, and an empty ledger lists nothing the target lacks.
    run = cli.run("compare", *args, "--json")
    assert run.code == 0, run.output
    assert json.loads(run.output)[0]["counts"] == {"in_sync": 4, "missing": 0, "differs": 0, "ledger_only": 0,
                                                   "ledger_stale": 0, "failed": 0}
    run = cli.run("compare", *args, "--write")
    assert run.code == 0, run.output
    assert "ledger rebuilt; commit" in run.output
    assert len(commits(remote)) == 3
    ledger = remote_ledger(remote, registry, ns)
    assert set(ledger) == set(expected)
    for key, entry in ledger.items():
        name, tag = key.split(":")
        target_repo = f"{dest}/{name.replace('/', '_')}"
        assert entry["digest"] == target_head(registry2, target_repo, tag) == expected[key]
        assert entry["target"] == f"{registry2.host}/{target_repo}:{tag}"
    assert run_blocks(show(remote, "CHANGELOG.md")) == 1  # a rebuild copies nothing: no changelog block
    run = cli.run("compare", *args, "--write")  # idempotent
    assert run.code == 0 and "(no change)" in run.output, run.output
    assert len(commits(remote)) == 3


def test_compare_counts_and_exit_status(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                        tmp_path: Path) -> None:
    ns, dest = unique_repo("cmp"), unique_repo("cmp-m")
    seeded = seed(registry, ns, ["app", "db", "web"], ["v1"])
    seeded.update(seed(registry, ns, ["app"], ["v2"]))
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    clean = cli.run("compare", *args)
    assert clean.code == 0, clean.output
    assert "4 in sync, 0 missing at target, 0 differ, 0 in ledger but not at target" in clean.output
    # Reality drifts on both sides.
    pusher = registry.pusher()
    push_image(pusher, f"{ns}/db", "v2", layers=[make_layer(7001, 900)])  # new at the source → missing
    moved, _ = push_image(pusher, f"{ns}/app", "v1", layers=[make_layer(7002, 900)])  # moved → differs
    target = registry2.pusher()
    target.delete_manifest(f"{dest}/app", seeded["app:v2"])  # gone at the target → missing + ledger-only
    assert target_head(registry2, f"{dest}/app", "v2") is None
    other, _ = push_image(target, f"{dest}/web", "v1", layers=[make_layer(7003, 900)])  # → differs + stale
    ledger_before = show(remote, f"{registry.host}/{ns}.json")
    run = cli.run("compare", *args, "--json")
    assert run.code == 1, run.output
    [result] = json.loads(run.output)
    assert result["counts"] == {"in_sync": 1, "missing": 2, "differs": 2, "ledger_only": 1, "ledger_stale": 1,
                                "failed": 0}
    assert sorted(result["missing"]) == [f"{registry2.host}/{dest}/app:v2", f"{registry2.host}/{dest}/db:v2"]
    differs = {d["target"]: (d["source_digest"], d["target_digest"]) for d in result["differs"]}
    assert differs == {f"{registry2.host}/{dest}/app:v1": (moved, seeded["app:v1"]),
                       f"{registry2.host}/{dest}/web:v1": (seeded["web:v1"], other)}
    assert result["ledger_only"] == ["app:v2"] and result["ledger_stale"] == ["web:v1"]
    text = cli.run("compare", *args)
    assert text.code == 1
    assert "1 in sync, 2 missing at target, 2 differ, 1 in ledger but not at target, 1 ledger digests stale" \
        in text.output
    assert f"  missing  {registry2.host}/{dest}/db:v2" in text.output.splitlines()
    assert show(remote, f"{registry.host}/{ns}.json") == ledger_before  # compare alone writes nothing
    # A sync with a full target verification repairs everything; compare agrees. (A default run between full
    # verifications takes the still-listed web:v1 for what the ledger says: tests/test_noop.py.)
    assert cli.sync(*args, "--verify-target").code == 0
    after = cli.run("compare", *args, "--json")
    assert after.code == 0, after.output
    assert json.loads(after.output)[0]["counts"]["in_sync"] == 5


def test_compare_write_keeps_entries_it_could_not_check(registry: RegistryServer, registry2: RegistryServer,
                                                        cli: Gcrsync, tmp_path: Path) -> None:
    ns, dest = unique_repo("cmpfail"), unique_repo("cmpfail-m")
    seed(registry, ns, ["app", "db"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    with FaultProxy(registry2.url) as proxy:
        args = (f"{registry.host}/{ns}", "--dest", f"{proxy.host}/{dest}", "--metadata", str(remote))
        assert cli.sync(*args).code == 0
        before = remote_ledger(remote, registry, ns)
        proxy.add_fault("500", methods=("HEAD",), path=f"/{dest}/db/manifests/v1$")  # every try fails
        run = cli.run("compare", *args, "--write", "--timeout", "1")
    assert run.code == 1, run.output
    assert f"  failed  {proxy.host}/{dest}/db:v1" in run.output and "(ledger entry kept)" in run.output
    assert "1 could not be checked" in run.output and "Traceback" not in run.output
    assert remote_ledger(remote, registry, ns) == before  # db:v1 kept, app:v1 unchanged


def test_monitor_reports_and_metrics_match_reality(make_registry: MakeRegistry, registry2: RegistryServer,
                                                   cli: Gcrsync, tmp_path: Path) -> None:
    source: RegistryServer = make_registry()  # its storage is corrupted on purpose below
    ns, dest = unique_repo("mon"), unique_repo("mon-m")
    seed(source, ns, ["good"], ["v1", "v2"])
    _, raw = push_image(source.pusher(), f"{ns}/bad", "v1", layers=[make_layer(7101, 3_000)])
    digest = json.loads(raw)["layers"][0]["digest"].split(":")[1]
    blob = source.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.write_bytes(bytes(data))
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{source.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    run = cli.sync(*args)
    assert run.code == 1 and run.report["totals"]["states"] == {"copied": 2, "failed": 1}, run.output
    push_image(source.pusher(), f"{ns}/good", "v3", layers=[make_layer(7102, 900)])  # pending new
    push_image(source.pusher(), f"{ns}/good", "v1", layers=[make_layer(7103, 900)])  # pending changed
    # Reality: good:v2 synced; good:v3 and bad:v1 new; good:v1 changed; 1 failure in the last run.
    metrics = tmp_path / "metrics" / "gcrsync.prom"
    metrics.parent.mkdir()
    run = cli.run("monitor", *args, "--count", "2", "--interval", "0.1s", "--metrics", str(metrics))
    assert run.code == 0, run.output
    label = f"{source.host}/{ns}"
    reports = [line for line in run.output.splitlines() if f" {label}: " in line]
    assert len(reports) == 2, run.output
    for line in reports:
        assert line.endswith(f"{label}: 1 synced, 2 pending new, 1 pending changed, 1 failed last run"), line
    samples = parse_prometheus(metrics.read_text())
    want = {"synced": 1, "pending_new": 2, "pending_changed": 1, "failed_last_run": 1}
    for state, value in want.items():
        assert samples[("gcrsync_tags", frozenset({("namespace", label), ("state", state)}))] == value
    assert samples[("gcrsync_listing_ok", frozenset({("namespace", label)}))] == 1
    assert samples[("gcrsync_last_check_timestamp_seconds", frozenset())] > 1.7e9
    assert not list(metrics.parent.glob(".gcrsync-tmp-*"))  # written atomically, nothing left behind
    # The monitor only reads: no commit, no ledger change.
    assert len(commits(remote)) == 1
    ledger: dict[str, Any] = remote_ledger(remote, source, ns)
    assert set(ledger) == {"good:v1", "good:v2"}


def test_monitor_while_a_sync_holds_the_metadata_lock(registry: RegistryServer, registry2: RegistryServer,
                                                      cli: Gcrsync, tmp_path: Path) -> None:
    """`monitor` next to `sync --every` on one machine shares the metadata clone; a running sync holds its lock.
    The monitor must still report (from the clone as it is), not die with "locked by pid"."""
    ns, dest = unique_repo("monlock"), unique_repo("monlock-m")
    seed(registry, ns, ["app"], ["v1", "v2"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    push_image(registry.pusher(), f"{ns}/app", "v3", layers=[make_layer(7201, 900)])
    held = MetadataRepo.open(str(remote), tmp_path / "cache" / "gcrsync" / "metadata")  # the running sync's view
    try:
        assert held.workdir == cli.clone()
        with held.lock():
            run = cli.run("monitor", *args, "--count", "1", "--json")
            second = cli.sync(*args)  # a second writer is still refused
    finally:
        held.close()
    assert run.code == 0, run.output
    [row] = json.loads(run.output.splitlines()[-1])["namespaces"]
    assert (row["synced"], row["pending_new"], row["pending_changed"], row["error"]) == (2, 1, 0, None)
    assert second.code == 1 and f"metadata repository is locked by pid {os.getpid()}" in second.output
    assert target_head(registry2, f"{dest}/app", "v3") is None
    assert cli.sync(*args).code == 0 and target_head(registry2, f"{dest}/app", "v3") is not None


def test_compare_write_never_empties_a_ledger_from_an_empty_listing(registry: RegistryServer,
                                                                     registry2: RegistryServer, cli: Gcrsync,
                                                                     tmp_path: Path) -> None:
    ns, dest = unique_repo("cmpgone"), unique_repo("cmpgone-m")
    seed(registry, ns, ["app"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    before = remote_ledger(remote, registry, ns)
    import shutil

    shutil.rmtree(registry.storage / "docker" / "registry" / "v2" / "repositories" / ns)
    run = cli.run("compare", *args, "--write")
    assert run.code == 1, run.output
    assert "lists no images, but its ledger holds 1" in run.output
    assert remote_ledger(remote, registry, ns) == before
