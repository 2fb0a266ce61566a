"""The generated README section and catalog.json, checked against the ledgers they come from."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from catalog_fixtures import OWNER_HEAD, OWNER_TAIL, T0, dg, tricky_ledgers, write_ledgers
from gcrsync.cli import main
from gcrsync.ledger import Ledger
from gcrsync.ledger.catalog import (
    BEGIN_MARKER,
    CATALOG_FORMAT,
    END_MARKER,
    Namespace,
    RunInfo,
    build_catalog,
    catalog_json,
    merge_readme,
    pull_command,
    readme_section,
    row_target,
)
from gcrsync.ledger.catalogfiles import CATALOG_JS, GENERATED, page_html, write_catalog
from gcrsync.ledger.metadata import MetadataRepo
from gcrsync.ledger.model import format_time

RUN = RunInfo(T0, 2)


def rows_by_ref(doc: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Every tag of a catalog as 'source/repo:tag' -> (digest, target, last_synced, platforms)."""
    out = {}
    for ns in doc["namespaces"]:
        for repo in ns["repositories"]:
            for row in repo["tags"]:
                out[f"{ns['source']}/{repo['name']}:{row[0]}"] = (
                    row[1], row_target(repo, row), row[2], row[3] if len(row) > 3 else None)
    return out


def expected_rows(ledgers: list[Ledger]) -> dict[str, tuple[Any, ...]]:
    return {f"{ledger.source}/{repo}:{tag}": (e.digest, e.target,
                                              format_time(e.last_synced) if e.last_synced else None, e.platforms)
            for ledger in ledgers for repo, tag, e in ledger.entries()}


def test_catalog_json_holds_every_ledger_entry(tmp_path: Path) -> None:
    ledgers = tricky_ledgers()
    write_ledgers(tmp_path, ledgers)
    write_catalog(tmp_path, RUN)
    text = (tmp_path / "catalog.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["format"] == CATALOG_FORMAT == "gcrsync-catalog/1"
    assert doc["tag_columns"] == ["tag", "digest", "last_synced", "platforms", "target"]
    assert doc["run"] == {"time": "2026-11-29T03:00:00Z", "failures": 2}
    assert doc["summary"] == {"namespaces": 3, "repositories": 4, "tags": 8}
    assert rows_by_ref(doc) == expected_rows(ledgers)
    assert [ns["source"] for ns in doc["namespaces"]] == ["localhost:5000/team", "quay.io/nothing-yet",
                                                          "registry.k8s.io"]
    k8s = doc["namespaces"][2]
    assert k8s["ledger"] == "registry.k8s.io.json" and (tmp_path / k8s["ledger"]).is_file()
    proxy = next(r for r in k8s["repositories"] if r["name"] == "kube-proxy")
    # Newest first; the mirror is stored once, a row repeats its target only when it is not <mirror>:<tag>.
    assert proxy["mirror"] == "docker.io/mirror/kube-proxy"
    assert [row[0] for row in proxy["tags"]] == ["v1.31.2-rc.0", "v1.9.0", "v1.31.20", "v1.31.2"]
    assert all(len(row) == 3 for row in proxy["tags"][:3]) and proxy["tags"][3][3] == ["linux/amd64", "linux/arm64"]
    csi = next(r for r in k8s["repositories"] if r["name"] == "sig-storage/csi/provisioner")
    assert csi["tags"][1] == ["build_7", dg(11), "2026-11-28T03:00:00Z", None, "docker.io/mirror/custom:build+7"]
    assert len(text.splitlines()) > 8  # a row per line: git diffs of a run stay readable
    script = (tmp_path / CATALOG_JS).read_text(encoding="utf-8")
    assert script == "window.GCRSYNC_CATALOG = " + text.rstrip("\n") + ";\n"


def test_readme_section_and_owner_text_preserved(tmp_path: Path) -> None:
    ledgers = tricky_ledgers()
    write_ledgers(tmp_path, ledgers)
    readme = tmp_path / "README.md"
    readme.write_text(OWNER_HEAD + "\n" + BEGIN_MARKER + "\nstale text\n" + END_MARKER + "\n" + OWNER_TAIL,
                      encoding="utf-8")
    write_catalog(tmp_path, RUN)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(OWNER_HEAD + "\n" + BEGIN_MARKER) and text.endswith(END_MARKER + "\n" + OWNER_TAIL)
    assert "stale text" not in text and text.count(BEGIN_MARKER) == 1
    assert ("**3 namespaces · 4 repositories · 8 tags** · last recorded run: 2026-11-29 03:00 UTC · "
            "failures in that run: 2") in text
    assert "### `registry.k8s.io` → `docker.io/mirror`" in text
    assert "Ledger: [registry.k8s.io.json](<registry.k8s.io.json>)" in text
    assert ("| `kube-proxy` | 4 | `v1.31.2-rc.0`, `v1.9.0`, `v1.31.20` | 2026-11-29 03:03 UTC | "
            "`docker pull docker.io/mirror/kube-proxy:v1.31.2-rc.0` |") in text
    assert ("| `sig-storage/csi/provisioner` | 2 | `V2_beta.1`, `build_7` | 2026-11-29 03:00 UTC | "
            "`docker pull docker.io/mirror/sig-storage_csi_provisioner:V2_beta.1` |") in text
    assert "| `pause` | 1 | `3.1` | unknown | `docker pull docker.io/mirror/pause:3.1` |" in text
    assert "`skopeo copy oci:/srv/mirror/team/tools_cli:v2 docker-daemon:tools_cli:v2`" in text
    assert "### `quay.io/nothing-yet` → `docker.io/mirror`\n\nLedger: [quay.io/nothing-yet.json]" in text
    assert "No images recorded yet." in text
    # Regenerating changes nothing, and nothing is rewritten.
    assert write_catalog(tmp_path) == [] and readme.read_text(encoding="utf-8") == text


def test_owner_text_kept_byte_for_byte_with_crlf_and_bom(tmp_path: Path) -> None:
    owner = "\ufeff# Mirror ✓\r\n\r\nWindows line endings 🐳\r\n"
    (tmp_path / "README.md").write_bytes(owner.encode("utf-8"))
    write_catalog(tmp_path, RUN)
    data = (tmp_path / "README.md").read_bytes()
    assert data.startswith(owner.encode("utf-8") + b"\n" + BEGIN_MARKER.encode())
    assert write_catalog(tmp_path) == []


def test_merge_readme_cases() -> None:
    section = BEGIN_MARKER + "\nnew\n" + END_MARKER + "\n"
    assert merge_readme(None, section) == "# Container image mirror\n\n" + section
    assert merge_readme("", section) == "# Container image mirror\n\n" + section
    assert merge_readme("Mine ✓", section) == "Mine ✓\n\n" + section  # no markers yet: appended
    assert merge_readme("Mine\n" + BEGIN_MARKER + "\nold, end marker deleted\n", section) == "Mine\n" + section
    kept = "A\n" + BEGIN_MARKER + "\nold\n" + END_MARKER + "B ✓\n" + END_MARKER + "\n"
    assert merge_readme(kept, section) == "A\n" + section.rstrip("\n") + "B ✓\n" + END_MARKER + "\n"
    once = merge_readme("Mine\n", section)
    assert merge_readme(once, section) == once


def test_readme_caps_repositories_per_namespace() -> None:
    ledger = Ledger("gcr.io/many", "docker.io/m")
    for i in range(5):
        ledger.record(f"r{i}", "1", digest=dg(i), target_ref=f"docker.io/m/r{i}:1", media_type=None, now=T0)
    text = readme_section(build_catalog([Namespace("gcr.io/many.json", ledger)], RUN), max_repos=3)
    assert "| `r2` |" in text and "| `r3` |" not in text
    assert "**1 namespace · 5 repositories · 5 tags**" in text
    assert "… and 2 more repositories: see [index.html](index.html)." in text


def test_empty_catalog() -> None:
    doc = build_catalog([], RunInfo())
    assert doc["summary"] == {"namespaces": 0, "repositories": 0, "tags": 0}
    assert json.loads(catalog_json(doc))["namespaces"] == []
    section = readme_section(doc)
    assert "Nothing has been mirrored yet." in section and "last recorded run: unknown" in section


def test_pull_command() -> None:
    assert pull_command("docker.io/mirror/app:v1") == "docker pull docker.io/mirror/app:v1"
    assert pull_command("oci:/srv/m/app:v1") == "skopeo copy oci:/srv/m/app:v1 docker-daemon:app:v1"
    assert pull_command("oci:/srv/m:x/app") == "skopeo copy oci:/srv/m:x/app docker-daemon:app:latest"


def test_broken_ledger_left_out_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_ledgers(tmp_path, tricky_ledgers())
    (tmp_path / "quay.io" / "broken.json").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        write_catalog(tmp_path, RUN)
    assert "quay.io/broken.json: invalid JSON" in caplog.text
    assert json.loads((tmp_path / "catalog.json").read_text())["summary"]["namespaces"] == 3


def test_page_is_self_contained() -> None:
    html = page_html()
    # No URL of another origin anywhere, and a CSP that would block one: the page works offline and leaks nothing.
    assert not re.search(r"https?:|ftp:|wss?:", html)
    assert re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?([^"' )>]+)""", html) == ["data:,", "catalog.js"]
    assert "default-src 'none'" in html and '<script src="catalog.js"></script>' in html
    assert "fetch(" not in html and "XMLHttpRequest(" not in html and "WebSocket(" not in html


def test_publish_records_the_run_and_noop_runs_change_nothing(tmp_path: Path) -> None:
    from gcrsync.ledger.changelog import Added, Failed, RunChanges

    plain = tmp_path / "plain"
    plain.mkdir()
    repo = MetadataRepo.open(str(plain), tmp_path / "cache")
    write_ledgers(plain, tricky_ledgers())
    changes = RunChanges(added=[Added("a", "b", dg(1))], failed=[Failed("c", "d", "boom")])
    repo.publish("sync", changes, run_time=T0)
    assert {p.name for p in plain.iterdir()} >= set(GENERATED)
    run = json.loads((plain / "catalog.json").read_text())["run"]
    assert run == {"time": "2026-11-29T03:00:00Z", "failures": 1}
    before = {name: (plain / name).read_text() for name in GENERATED}
    repo.publish("no-op", RunChanges(), run_time=T0.replace(year=2027))  # a run that changed nothing
    assert {name: (plain / name).read_text() for name in GENERATED} == before


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_catalog_command_regenerates_and_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp_path / "seed"
    git("clone", "-q", str(remote), str(seed))
    write_ledgers(seed, tricky_ledgers())  # ledgers written by an older version: no catalog yet
    (seed / "README.md").write_text(OWNER_HEAD, encoding="utf-8")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ledgers", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    result = CliRunner().invoke(main, ["catalog", "--metadata", str(remote)])
    assert result.exit_code == 0, result.output
    assert "catalog: 3 namespaces, 4 repositories, 8 tags; rewrote README.md, catalog.js, catalog.json, " \
           "index.html; commit " in result.output
    files = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    assert set(GENERATED) <= set(files)
    readme = git("--git-dir", str(remote), "show", "main:README.md")
    assert readme.startswith(OWNER_HEAD + "\n" + BEGIN_MARKER) and "last recorded run: unknown" in readme
    again = CliRunner().invoke(main, ["catalog", "--metadata", str(remote)])
    assert again.exit_code == 0 and "no file changed" in again.output and "commit" not in again.output


def test_readme_catalog_example_is_what_gcrsync_writes() -> None:
    """The documented catalog.json example is byte-for-byte the output for the ledger it describes."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = next(b for b in re.findall(r"```json\n(.*?)```", readme, re.S) if CATALOG_FORMAT in b)
    doc = json.loads(example)
    ns = doc["namespaces"][0]
    ledger = Ledger(ns["source"], ns["target"])
    for repo in ns["repositories"]:
        for row in repo["tags"]:
            ledger.record(repo["name"], row[0], digest=row[1], target_ref=row_target(repo, row), media_type=None,
                          now=datetime.fromisoformat(row[2]), platforms=row[3] if len(row) > 3 else None)
    run = RunInfo(datetime.fromisoformat(doc["run"]["time"]), doc["run"]["failures"])
    assert catalog_json(build_catalog([Namespace(ns["ledger"], ledger)], run)) == example


def test_user_work_tree_readme_with_uncommitted_edits_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    from gcrsync.ledger.changelog import Added, RunChanges

    tree = tmp_path / "tree"
    git("init", "-q", "-b", "main", str(tree))
    (tree / "README.md").write_text(OWNER_HEAD, encoding="utf-8")
    git("add", "README.md", cwd=tree)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "readme", cwd=tree)
    (tree / "README.md").write_text(OWNER_HEAD + "half-written ✎\n", encoding="utf-8")  # the owner is editing
    repo = MetadataRepo.open(str(tree), tmp_path / "cache")
    assert not repo.owned
    write_ledgers(tree, tricky_ledgers())
    with caplog.at_level(logging.WARNING):
        assert repo.publish("sync", RunChanges(added=[Added("a", "b", dg(1))]), run_time=T0) is not None
    assert "README.md has uncommitted changes" in caplog.text
    assert (tree / "README.md").read_text(encoding="utf-8") == OWNER_HEAD + "half-written ✎\n"
    assert git("show", "HEAD:README.md", cwd=tree) == OWNER_HEAD and "catalog.json" in git(
        "ls-tree", "--name-only", "HEAD", cwd=tree)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "done editing", cwd=tree)
    assert repo.publish("next") is not None  # now the section is added, the owner's text kept
    committed = git("show", "HEAD:README.md", cwd=tree)
    assert committed.startswith(OWNER_HEAD + "half-written ✎\n\n" + BEGIN_MARKER)


def test_a_run_that_changed_nothing_does_not_read_the_ledgers_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No change and no ledger written: the catalog files (already there) are not regenerated, which at
    50,000 tags was most of a no-op's memory and time; a run that changed something regenerates them."""
    from gcrsync.ledger import metadata as metadata_module
    from gcrsync.ledger.changelog import Added, RunChanges

    root = tmp_path / "plain"
    root.mkdir()
    write_ledgers(root, tricky_ledgers())
    repo = MetadataRepo.open(str(root), tmp_path / "cache")
    repo.publish("first", RunChanges(added=[Added("a", "b", dg(1))]), run_time=T0)
    assert (root / "catalog.json").exists()
    calls: list[object] = []
    real = metadata_module.write_repo_catalog
    monkeypatch.setattr(metadata_module, "write_repo_catalog", lambda *a, **k: calls.append(a) or real(*a, **k))
    repo.publish("quiet", RunChanges(), run_time=T0)
    assert calls == []
    repo.publish("busy", RunChanges(added=[Added("c", "d", dg(2))]), run_time=T0)
    assert len(calls) == 1
