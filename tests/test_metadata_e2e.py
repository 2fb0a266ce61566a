"""The metadata repository end to end: the real `gcrsync sync` CLI, real registries, real git remotes.

Everything here goes through the command line (in process with CliRunner, or as a subprocess where a signal
must hit a real process), except the legacy-ledger migration, which the CLI cannot reach with a loopback
source (LedgerFiles only looks for legacy files of gcr.io namespaces); that test drives Mirror directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import ACCEPT_ALL, derive_seed, make_layer, push_image

from faultproxy import FaultProxy
from gcrsync.cli import main
from gcrsync.engine.plan import SourceSpec
from gcrsync.ledger import LedgerFiles, MetadataRepo
from gcrsync.ledger.changelog import short_digest
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from gcrsync.sync import Mirror, SyncOptions, SyncReport
from harness import RegistryServer, skopeo_copy_all, skopeo_digest, unique_repo
from test_git_metadata import _GitHTTP, commits, git, show

ENTRY = "from gcrsync.cli import main; main()"
DEADLINE = 60.0  # generous upper bound for polling a condition; never a timing assertion


# -- running the CLI ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git config or credential variable may influence (or be changed by) these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_ASKPASS", "SSH_ASKPASS", "GIT_DIR", "GIT_WORK_TREE", "GCRSYNC_GIT_TOKEN",
                "GCRSYNC_GIT_USERNAME", "GCRSYNC_GIT_PASSWORD", "GCRSYNC_SRC_CREDS", "GCRSYNC_DEST_CREDS"):
        monkeypatch.delenv(var, raising=False)


@dataclass
class Run:
    code: int
    output: str  # stdout and stderr (logs) interleaved
    report: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""  # stdout alone (what --json prints)


class Gcrsync:
    """The real CLI with private XDG directories under tmp; `cache` names one XDG_CACHE_HOME, i.e. one working
    copy of a metadata remote (two caches = two machines sharing the remote)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runs = 0

    def env(self, cache: str = "cache", **extra: str) -> dict[str, str]:
        return {"DOCKER_CONFIG": str(self.tmp / "nodocker"), "XDG_DATA_HOME": str(self.tmp / "data"),
                "XDG_CACHE_HOME": str(self.tmp / cache), "XDG_STATE_HOME": str(self.tmp / "state"), **extra}

    def run(self, *args: str, cache: str = "cache", env: dict[str, str] | None = None, debug: bool = False) -> Run:
        argv = ["--debug", *args] if debug else list(args)
        result = CliRunner().invoke(main, argv, env=self.env(cache, **(env or {})))
        return Run(result.exit_code, result.output, stdout=result.stdout)

    def sync(self, *args: str, cache: str = "cache", env: dict[str, str] | None = None, debug: bool = False) -> Run:
        self.runs += 1
        report = self.tmp / f"report-{self.runs}.json"
        run = self.run("sync", *args, "--report", str(report), cache=cache, env=env, debug=debug)
        run.report = json.loads(report.read_text()) if report.exists() else {}
        return run

    def spawn(self, *args: str, cache: str = "cache") -> subprocess.Popen[bytes]:
        self.runs += 1
        log = (self.tmp / f"proc-{self.runs}.log").open("wb")
        env = {**os.environ, **self.env(cache)}
        proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        return proc

    def clone(self, cache: str = "cache") -> Path:
        """The one metadata clone gcrsync keeps under this cache."""
        found = [p.parent for p in (self.tmp / cache / "gcrsync" / "metadata").glob("*/.git")]
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def cli(tmp_path: Path) -> Gcrsync:
    return Gcrsync(tmp_path)


def proc_output(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses a test starts; any still running at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if proc is not None and proc.poll() is not None and not condition():
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{proc_output(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- git and registry helpers ---------------------------------------------------------------------------------
def bare_remote(path: Path) -> Path:
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


def ledger_path(source: RegistryServer, ns: str) -> str:
    return f"{source.host}/{ns}.json"


def images_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"repo:tag": entry} of a parsed ledger."""
    return {f"{repo}:{tag}": entry for repo, tags in doc["images"].items() for tag, entry in tags.items()}


def remote_ledger(bare: Path, source: RegistryServer, ns: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(show(bare, ledger_path(source, ns)))
    assert doc["format"] == "gcrsync-ledger/1" and doc["source"] == f"{source.host}/{ns}"
    return images_of(doc)


def local_ledger(workdir: Path, source: RegistryServer, ns: str) -> dict[str, dict[str, Any]]:
    path = workdir / ledger_path(source, ns)
    return images_of(json.loads(path.read_text())) if path.is_file() else {}


def target_head(server: RegistryServer, repo: str, tag: str) -> str | None:
    """The target's digest for repo:tag (a plain HEAD), or None when it does not have it."""
    resp = server.pusher().request("HEAD", f"/v2/{repo}/manifests/{tag}", repo=repo,
                                   headers={"Accept": ACCEPT_ALL})
    if resp.status == 404:
        return None
    assert resp.status == 200, resp.status
    return resp.headers["Docker-Content-Digest"]


def seed(server: RegistryServer, ns: str, names: list[str], tags: list[str], size: int = 1_000) -> dict[str, str]:
    """Push names × tags under ns; returns "name:tag" → digest."""
    out = {}
    for name in names:
        for tag in tags:
            layer = make_layer(derive_seed(0, ns, name, tag), size)  # ns is unique: so is every image
            out[f"{name}:{tag}"], _ = push_image(server.pusher(), f"{ns}/{name}", tag, layers=[layer])
    return out


def run_blocks(changelog: str) -> int:
    return sum(line.startswith("## ") for line in changelog.splitlines())


def first_block(changelog: str) -> str:
    blocks = changelog.split("\n## ")
    assert len(blocks) >= 2, changelog
    return blocks[1]


# -- the tests --------------------------------------------------------------------------------------------------
def test_first_sync_noop_and_moved_tag(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                       tmp_path: Path) -> None:
    ns, dest = unique_repo("meta"), unique_repo("mirror")
    expected = seed(registry, ns, ["app", "db", "tools/cli"], ["v1", "latest"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    run = cli.sync(*args)
    assert run.code == 0, run.output
    assert len(commits(remote)) == 1 and run.report["commit"] == commits(remote)[0]
    ledger = remote_ledger(remote, registry, ns)
    assert set(ledger) == set(expected)
    for key, digest in expected.items():
        name, tag = key.split(":")
        target_repo = f"{dest}/{name.replace('/', '_')}"
        assert ledger[key]["digest"] == skopeo_digest(registry2.ref(target_repo, tag)) == digest
        assert ledger[key]["target"] == f"{registry2.host}/{target_repo}:{tag}"
    block = first_block(show(remote, "CHANGELOG.md"))
    assert "### Added" in block and "### Updated" not in block
    for key, digest in expected.items():
        name, tag = key.split(":")
        line = (f"- `{registry.host}/{ns}/{name}:{tag}` → `{registry2.host}/{dest}/{name.replace('/', '_')}:{tag}` "
                f"({short_digest(digest)})")
        assert line in block.splitlines()
    # Nothing changed: no new commit.
    run = cli.sync(*args)
    assert run.code == 0, run.output
    assert run.report["totals"]["states"] == {"unchanged": len(expected)} and run.report["commit"] is None
    assert len(commits(remote)) == 1
    # Tag moved at the source: one commit, an Updated entry old → new, the old digest kept in the ledger.
    old = expected["app:latest"]
    new, _ = push_image(registry.pusher(), f"{ns}/app", "latest", layers=[make_layer(424242, 1_500)])
    run = cli.sync(*args)
    assert run.code == 0, run.output
    assert len(commits(remote)) == 2
    entry = remote_ledger(remote, registry, ns)["app:latest"]
    assert entry["digest"] == new == skopeo_digest(registry2.ref(f"{dest}/app", "latest"))
    assert entry["previous_digests"] == [old]
    block = first_block(show(remote, "CHANGELOG.md"))
    assert "### Added" not in block and "### Updated" in block
    assert (f"- `{registry.host}/{ns}/app:latest` → `{registry2.host}/{dest}/app:latest` "
            f"({short_digest(old)} → {short_digest(new)})") in block.splitlines()
    assert run_blocks(show(remote, "CHANGELOG.md")) == 2


def test_two_owned_clones_racing(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                 tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Two machines (two cache dirs) sync different namespaces at the same time into one remote."""
    remote = bare_remote(tmp_path / "remote.git")
    spaces = [unique_repo("race-a"), unique_repo("race-b")]
    seeded = {ns: seed(registry, ns, ["x", "y"], ["1"]) for ns in spaces}
    for i, ns in enumerate(spaces):
        procs.append(cli.spawn("sync", f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{ns}-m",
                               "--metadata", str(remote), cache=f"cache-{i}"))
    for proc in procs:
        assert proc.wait(timeout=DEADLINE) == 0, proc_output(proc)
    assert len(commits(remote)) == 2  # linear: the later push was rebuilt on the earlier one, never forced
    changelog = show(remote, "CHANGELOG.md")
    for ns, expected in seeded.items():
        ledger = remote_ledger(remote, registry, ns)
        assert {k: e["digest"] for k, e in ledger.items()} == expected
        assert changelog.count(f"`{registry.host}/{ns}/") == len(expected)
    assert changelog.count("# Changelog") == 1


def test_two_stale_work_trees_same_ledger(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                          tmp_path: Path) -> None:
    """A deterministic race: two user clones of one remote (never fetched on open), same namespace, different
    tags. The second push is rejected, rebuilt on top of the first (ledger merged entry by entry), pushed."""
    ns, dest = unique_repo("wt"), unique_repo("wt-m")
    expected = seed(registry, ns, ["app"], ["v1", "v2"])
    remote = bare_remote(tmp_path / "remote.git")
    init = tmp_path / "init"
    git("clone", "-q", str(remote), str(init))
    (init / "README.md").write_text("mirror metadata\n")
    git("add", "README.md", cwd=init)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=init)
    git("push", "-q", "origin", "HEAD:main", cwd=init)
    clones = [tmp_path / "wt-a", tmp_path / "wt-b"]
    for clone in clones:
        git("clone", "-q", str(remote), str(clone))
    for clone, tag in zip(clones, ["v1", "v2"], strict=True):
        run = cli.sync(f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--include", tag,
                       "--metadata", str(clone))
        assert run.code == 0, run.output
    assert "metadata push rejected" in run.output and "rebuilding" in run.output  # the race really happened
    history = commits(remote)
    assert len(history) == 3 and git("rev-parse", "HEAD", cwd=clones[1]).strip() == history[0]
    ledger = remote_ledger(remote, registry, ns)
    assert {k: e["digest"] for k, e in ledger.items()} == expected
    changelog = show(remote, "CHANGELOG.md")
    assert run_blocks(changelog) == 2 and changelog.index(":v2`") < changelog.index(":v1`")
    # The owner's README text survives, and the catalog was regenerated from the merged ledger (both tags).
    readme = show(remote, "README.md")
    assert readme.startswith("mirror metadata\n\n<!-- gcrsync:catalog:begin -->") and "| 2 |" in readme
    tags = {row[0] for ns_ in json.loads(show(remote, "catalog.json"))["namespaces"]
            for repo in ns_["repositories"] for row in repo["tags"]}
    assert tags == {"v1", "v2"}


def test_a_removal_by_one_of_two_racing_runs_stays_removed(registry: RegistryServer, registry2: RegistryServer,
                                                           cli: Gcrsync, tmp_path: Path) -> None:
    """Two stale clones: B records a new tag and pushes first; A, not knowing B's commit, records a tag as
    removed upstream. A's rebuilt commit must keep the removal (the merge knows their common ancestor)."""
    ns, dest = unique_repo("race-rm"), unique_repo("race-rm-m")
    expected = seed(registry, ns, ["app"], ["v1", "v2", "v3", "v4"])
    remote = bare_remote(tmp_path / "remote.git")
    clones = [tmp_path / "wt-a", tmp_path / "wt-b"]
    git("clone", "-q", str(remote), str(clones[0]))
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}")
    assert cli.sync(*args, "--metadata", str(clones[0])).code == 0
    git("clone", "-q", str(remote), str(clones[1]))
    expected |= seed(registry, ns, ["app"], ["v5"])
    assert cli.sync(*args, "--metadata", str(clones[1])).code == 0  # B: adds v5, pushes first
    tags_dir = registry.storage / "docker/registry/v2/repositories" / ns / "app/_manifests/tags"
    shutil.rmtree(tags_dir / "v1")  # gone upstream (1 of 4 in A's ledger: within the guard)
    run = cli.sync(*args, "--metadata", str(clones[0]))  # A: stale, records v1 removed; its push is rebuilt
    assert run.code == 0, run.output
    assert "rebuilding" in run.output  # the race really happened
    del expected["app:v1"]
    assert {k: e["digest"] for k, e in remote_ledger(remote, registry, ns).items()} == expected
    assert "Removed upstream" in show(remote, "CHANGELOG.md")


def test_push_losing_a_concurrent_ref_update_is_retried(registry: RegistryServer, registry2: RegistryServer,
                                                        cli: Gcrsync, tmp_path: Path) -> None:
    """Two pushes in flight at once: the remote fails to lock the branch ("cannot lock ref ... is at X but
    expected Y") rather than answering non-fast-forward. That is a lost race too: fetch, rebuild, push again.
    A pre-receive hook makes it deterministic by landing "the other run's" commit while our push is in flight."""
    ns, dest = unique_repo("lock"), unique_repo("lock-m")
    seed(registry, ns, ["app"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other))
    (other / "NOTES.md").write_text("another run's change\n")
    git("add", "NOTES.md", cwd=other)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other run", cwd=other)
    git("push", "-q", "origin", "HEAD:refs/heads/other", cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other).strip()
    marker = tmp_path / "hook-fired"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"""#!/bin/sh
if [ ! -e '{marker}' ]; then
  touch '{marker}'
  env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES \\
    git update-ref refs/heads/main {theirs}
fi
""")
    hook.chmod(0o755)
    new = seed(registry, ns, ["web"], ["v1"])["web:v1"]
    run = cli.sync(*args)
    assert run.code == 0, run.output
    assert marker.exists()  # the hook did move the branch under our push
    assert "metadata push rejected" in run.output
    history = commits(remote)
    assert len(history) == 3 and history[1] == theirs  # rebuilt on top of the other run's commit
    assert show(remote, "NOTES.md") == "another run's change\n"
    assert remote_ledger(remote, registry, ns)["web:v1"]["digest"] == new


def test_push_failure_then_pushed_by_next_run(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                              tmp_path: Path) -> None:
    ns, dest = unique_repo("offline"), unique_repo("offline-m")
    seed(registry, ns, ["app"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    first = commits(remote)
    away = tmp_path / "away.git"
    remote.rename(away)
    new = seed(registry, ns, ["web"], ["v1"])["web:v1"]
    run = cli.sync(*args)
    # The images were copied, but the run failed to publish: exit 1, said once, in the report too.
    assert run.code == 1, run.output
    assert "cannot fetch the metadata repository, working offline" in run.output
    assert "push failed" in run.output and "it will be pushed by the next run" in run.output
    assert run.report["totals"]["states"] == {"copied": 1, "unchanged": 1}
    assert "push failed" in run.report["metadata_error"]
    local = local_ledger(cli.clone(), registry, ns)
    assert set(local) == {"app:v1", "web:v1"}
    assert local["web:v1"]["digest"] == new == target_head(registry2, f"{dest}/web", "v1")
    assert not git("status", "--porcelain", cwd=cli.clone()).strip()  # committed locally, not left dirty
    away.rename(remote)
    assert commits(remote) == first
    run = cli.sync(*args)  # nothing to copy; the pending commit goes out
    assert run.code == 0, run.output
    assert run.report["totals"]["states"] == {"unchanged": 2}
    assert len(commits(remote)) == 2
    assert remote_ledger(remote, registry, ns)["web:v1"]["digest"] == new
    assert show(remote, "CHANGELOG.md").count(f"`{registry.host}/{ns}/web:v1`") == 1


def test_killed_mid_sync_ledger_never_ahead_of_target(registry: RegistryServer, registry2: RegistryServer,
                                                      cli: Gcrsync, tmp_path: Path,
                                                      procs: list[subprocess.Popen[bytes]]) -> None:
    ns, dest = unique_repo("kill"), unique_repo("kill-m")
    names = [f"r{i}" for i in range(8)]
    expected = seed(registry, ns, names, ["v1"], size=300_000)
    remote = bare_remote(tmp_path / "remote.git")
    # Images r4..r7 hang at their target manifest PUT; with --jobs 1 they come after r0..r3 (catalog order).
    with FaultProxy(registry2.url) as proxy:
        proxy.add_fault("stall", methods=("PUT",), path=rf"^/v2/{dest}/r[4-7]/manifests/", stall_seconds=120)
        args = (f"{registry.host}/{ns}", "--dest", f"{proxy.host}/{dest}", "--metadata", str(remote), "--jobs", "1")
        proc = cli.spawn("sync", *args)
        procs.append(proc)

        def stalled_with_ledger() -> bool:
            clone = list((tmp_path / "cache" / "gcrsync" / "metadata").glob("*/.git"))
            return (proxy.stats.faults["stall"] >= 1 and bool(clone)
                    and len(local_ledger(clone[0].parent, registry, ns)) >= 1)

        wait_for(stalled_with_ledger, "a stalled image after at least one finished one", proc)
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert commits(remote) == []  # the run never got to publish
        ledger = local_ledger(cli.clone(), registry, ns)
        at_target = {k: target_head(registry2, f"{dest}/{k.split(':')[0]}", "v1") for k in expected}
        assert 1 <= len(ledger) < len(expected) and None in at_target.values()
        for key, entry in ledger.items():  # the ledger never lists an image the target lacks
            assert at_target[key] is not None and entry["digest"] == at_target[key] == expected[key], key
        # The next run (faults gone) takes over the stale lock and completes the rest.
        proxy.clear_faults()
        run = cli.sync(*args)
    assert run.code == 0, run.output
    # Exactly what the target lacked is copied (the ledger may trail the target by its ~1 s write interval:
    # those images are found at the target by the next plan and recorded then).
    assert run.report["totals"]["states"].get("copied", 0) == sum(v is None for v in at_target.values())
    final = remote_ledger(remote, registry, ns)
    assert {k: e["digest"] for k, e in final.items()} == expected
    for key, digest in expected.items():
        assert target_head(registry2, f"{dest}/{key.split(':')[0]}", "v1") == digest
    # The CHANGELOG tells every image exactly once as added, also those the killed run copied (journaled).
    changelog = show(remote, "CHANGELOG.md")
    added = [line for line in changelog.splitlines() if line.startswith("- `") and f"/{ns}/" in line]
    assert sorted(line.split("`")[1].rsplit("/", 1)[1] for line in added) == sorted(expected), changelog
    assert changelog.count("### Added") == 1  # one publish, so one block


def test_killed_inside_git_leaves_no_lasting_git_lock(registry: RegistryServer, registry2: RegistryServer,
                                                      cli: Gcrsync, tmp_path: Path) -> None:
    """SIGKILL can also land while gcrsync's `git add`/`git commit` runs (the kernel kills the whole group on an
    OOM or a `systemctl kill`): git then leaves .git/index.lock behind. Under our own flock, in our own clone,
    such a lock is stale by construction; it must not block every later run."""
    ns, dest = unique_repo("gitlock"), unique_repo("gitlock-m")
    seed(registry, ns, ["app"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(remote))
    assert cli.sync(*args).code == 0
    clone = cli.clone()
    (clone / ".git" / "index.lock").write_bytes(b"")  # what the killed `git add -A` left
    new = seed(registry, ns, ["web"], ["v1"])["web:v1"]
    run = cli.sync(*args)
    assert run.code == 0, run.output
    assert len(commits(remote)) == 2 and remote_ledger(remote, registry, ns)["web:v1"]["digest"] == new
    assert not (clone / ".git" / "index.lock").exists()
    assert (clone / ".git" / "info" / "exclude").is_file()  # the clone itself was kept, not re-made


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[str, type[_GitHTTP]]]:
    """A smart-HTTP git remote behind Basic auth (test_git_metadata's handler), with a realistic token."""
    from http.server import ThreadingHTTPServer
    from threading import Thread

    root = tmp_path / "srv"
    git("init", "-q", "--bare", "-b", "main", str(root / "meta.git"))
    git("config", "http.receivepack", "true", cwd=root / "meta.git")
    handler = type("H", (_GitHTTP,), {"root": root, "user": "bot", "password": "ghp_E2eT0kenNeverSh0wn9F",
                                      "auth_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/meta.git", handler
    server.shutdown()
    thread.join()


def test_git_token_never_written_anywhere(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                          tmp_path: Path, http_remote: tuple[str, type[_GitHTTP]]) -> None:
    url, handler = http_remote
    token = handler.password
    served = handler.root / "meta.git"
    ns, dest = unique_repo("tok"), unique_repo("tok-m")
    seed(registry, ns, ["app"], ["v1", "v2"])
    args = (f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}")
    denied = cli.sync(*args, "--metadata", url, cache="nocreds")  # the server really wants the token
    assert denied.code == 1 and "cannot reach the metadata repository" in denied.output
    creds = {"GCRSYNC_GIT_TOKEN": token, "GCRSYNC_GIT_USERNAME": handler.user}
    runs = [cli.sync(*args, "--metadata", url, env=creds, debug=True) for _ in range(2)]  # commit, then no-op
    assert [r.code for r in runs] == [0, 0] and len(commits(served)) == 1 and handler.auth_seen
    assert "DEBUG" in runs[0].output and "git push" in runs[0].output  # debug logging really was on
    # Credentials in the URL: stripped from it (a warning says so) and passed like the env token.
    seed(registry, ns, ["web"], ["v1"])
    with_userinfo = url.replace("http://", f"http://{handler.user}:{token}@")
    runs.append(cli.sync(*args, "--metadata", with_userinfo, cache="cache-url", debug=True))
    assert runs[-1].code == 0 and "credentials in the metadata repository URL were removed" in runs[-1].output
    assert len(commits(served)) == 2
    # A push the server refuses: the error is reported, still without the token.
    git("config", "http.receivepack", "false", cwd=served)
    seed(registry, ns, ["db"], ["v1"])
    runs.append(cli.sync(*args, "--metadata", url, env=creds, debug=True))
    assert runs[-1].code == 1 and "push failed" in runs[-1].output
    for cache in ("cache", "cache-url"):
        clone = cli.clone(cache)
        assert git("remote", "get-url", "origin", cwd=clone).strip() == url
        assert token not in (clone / ".git" / "config").read_text()
        assert token not in git("log", "-p", "--all", cwd=clone)
    assert token not in git("log", "-p", "--all", cwd=served)
    for run in runs:
        assert token not in run.output and token not in json.dumps(run.report)
    scanned = 0
    for path in tmp_path.rglob("*"):  # every file written: clones, caches, state, reports, the served repo
        if path.is_file() and not path.is_symlink():
            scanned += 1
            assert token.encode() not in path.read_bytes(), path
    assert scanned > 20


def test_legacy_ledger_migrated_by_a_sync(registry: RegistryServer, registry2: RegistryServer,
                                          cli: Gcrsync, tmp_path: Path) -> None:
    """LedgerFiles only looks for legacy files of gcr.io namespaces (the only ones the original tool read), so
    `gcrsync sync` with a loopback source leaves such a file alone (shown first, through the CLI). The migration
    itself runs at the library level: Mirror.run with a LedgerFiles that counts the loopback host as a legacy
    registry. Real registries and real git either way."""
    ns, cli_ns, dest = unique_repo("legacy"), unique_repo("legacy-cli"), unique_repo("legacy-m")
    expected = seed(registry, ns, ["pause", "etcd"], ["1"])
    cli_expected = seed(registry, cli_ns, ["pause"], ["1"])
    skopeo_copy_all(registry.ref(f"{ns}/pause", "1"), registry2.ref(f"{dest}/pause", "1"))  # already mirrored
    remote = bare_remote(tmp_path / "remote.git")
    init = tmp_path / "init"
    git("clone", "-q", str(remote), str(init))
    legacy_text = json.dumps(sorted(["pause:1"]), indent=4)
    for name in (ns, cli_ns):
        (init / name).write_text(legacy_text)
    git("add", "-A", cwd=init)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "original gcrsync", cwd=init)
    git("push", "-q", "origin", "HEAD:main", cwd=init)
    run = cli.sync(f"{registry.host}/{cli_ns}", "--dest", f"{registry2.host}/{dest}-cli", "--metadata", str(remote))
    assert run.code == 0, run.output
    assert "migrating legacy ledger" not in run.output and show(remote, cli_ns) == legacy_text  # left alone
    cli_ledger = remote_ledger(remote, registry, cli_ns)
    assert {k: e["digest"] for k, e in cli_ledger.items()} == cli_expected
    assert not any(e.get("legacy") for e in cli_ledger.values())

    repo = MetadataRepo.open(str(remote), tmp_path / "lib-cache")
    spec = SourceSpec(registry=registry.host, namespace=ns, target_prefix=f"{registry2.host}/{dest}")

    async def mirror() -> SyncReport:
        async with Transport(TransportOptions()) as transport:
            client = RegistryClient(transport, CredentialStore(use_docker_config=False))
            return await Mirror(client, [spec], SyncOptions(jobs=2), repo).run()

    try:
        repo.ledgers = LedgerFiles(repo.workdir, legacy_registries=frozenset({registry.host}))
        assert repo.ledgers.load(spec.label, spec.target_prefix).get("pause", "1").legacy  # type: ignore[union-attr]
        with repo.lock():
            report = asyncio.run(mirror())  # not an async test: the CLI above runs its own event loop
            assert report.ok and [a.source for a in report.changes.added] == [f"{registry.host}/{ns}/etcd:1"]
            sha = repo.publish("migrate", report.changes)
    finally:
        repo.close()
    assert sha is not None and commits(remote)[0] == sha
    files = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    assert ns not in files and ledger_path(registry, ns) in files and cli_ns in files  # only ns's file migrated
    ledger = remote_ledger(remote, registry, ns)
    assert {k: e["digest"] for k, e in ledger.items()} == expected
    assert not any(e.get("legacy") for e in ledger.values())
    block = first_block(show(remote, "CHANGELOG.md"))
    assert f"`{registry.host}/{ns}/etcd:1`" in block and f"{ns}/pause:1`" not in block  # pause was there


@pytest.mark.parametrize("bad", ["traversal", "json"])
def test_broken_ledger_fails_cleanly_untouched(registry: RegistryServer, registry2: RegistryServer, cli: Gcrsync,
                                               tmp_path: Path, bad: str) -> None:
    ns, dest = unique_repo("broken"), unique_repo("broken-m")
    seed(registry, ns, ["app"], ["v1"])
    tree = tmp_path / "tree"
    git("init", "-q", "-b", "main", str(tree))
    path = tree / ledger_path(registry, ns)
    path.parent.mkdir(parents=True)
    entry = {"digest": "sha256:" + "a" * 64, "target": f"{registry2.host}/{dest}/x:v1"}
    doc = {"format": "gcrsync-ledger/1", "source": f"{registry.host}/{ns}", "target": f"{registry2.host}/{dest}",
           "images": {"../../etc/x": {"v1": entry}}}
    path.write_bytes(json.dumps(doc).encode() if bad == "traversal" else b'{"format": "gcrsync-ledger/1", "ima')
    git("add", "-A", cwd=tree)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "broken", cwd=tree)
    before, head = path.read_bytes(), git("rev-parse", "HEAD", cwd=tree)
    registry2.clear_requests()
    run = cli.sync(f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata", str(tree))
    assert run.code == 1
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in run.output, run.output
    assert f"{ns}.json" in errors[0]
    assert ("invalid image name '../../etc/x'" if bad == "traversal" else "invalid JSON") in errors[0]
    assert path.read_bytes() == before and git("rev-parse", "HEAD", cwd=tree) == head
    assert not git("status", "--porcelain", cwd=tree).strip()
    assert not [r for r in registry2.requests() if r.method in ("PUT", "POST", "PATCH")]


def test_every_interval_stops_cleanly_on_sigterm(registry: RegistryServer, registry2: RegistryServer,
                                                 cli: Gcrsync, tmp_path: Path,
                                                 procs: list[subprocess.Popen[bytes]]) -> None:
    ns, dest = unique_repo("every"), unique_repo("every-m")
    expected = seed(registry, ns, ["a", "b", "c"], ["v1"])
    remote = bare_remote(tmp_path / "remote.git")
    proc = cli.spawn("sync", f"{registry.host}/{ns}", "--dest", f"{registry2.host}/{dest}", "--metadata",
                     str(remote), "--every", "1s")
    procs.append(proc)
    wait_for(lambda: len(commits(remote)) >= 1, "the first run's commit", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE) == 0, proc_output(proc)
    assert "SIGTERM" in proc_output(proc) and "Traceback" not in proc_output(proc)
    assert len(commits(remote)) == 1  # later runs had nothing to record
    assert {k: e["digest"] for k, e in remote_ledger(remote, registry, ns).items()} == expected
    assert not (cli.clone() / ".git" / "gcrsync.lock").exists()
