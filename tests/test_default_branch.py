"""A new user's first sync into an empty bare remote pushes to the branch the remote's HEAD names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catalog_fixtures import T0, dg
from gcrsync.ledger.changelog import Added, RunChanges
from gcrsync.ledger.metadata import MetadataRepo

SRC, TGT = "gcr.io/google-containers", "docker.io/gcrxio"


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))  # init.defaultBranch unset
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def first_sync(location: str, cache: Path, branch: str | None = None) -> MetadataRepo:
    repo = MetadataRepo.open(location, cache, author_name="t", author_email="t@example.invalid", branch=branch)
    ledger = repo.ledgers.load(SRC, TGT)
    ledger.record("pause", "3.9", digest=dg(1), target_ref=f"{TGT}/pause:3.9", media_type=None, now=T0)
    repo.ledgers.save(ledger)
    assert repo.publish("first sync", RunChanges(added=[Added(f"{SRC}/pause:3.9", f"{TGT}/pause:3.9", dg(1))]),
                        run_time=T0) is not None
    return repo


@pytest.mark.parametrize(("init_args", "head"), [((), "master"), (("--initial-branch=trunk",), "trunk")],
                         ids=["plain-init-master", "initial-branch-trunk"])
def test_empty_bare_remote_gets_its_own_default_branch(tmp_path: Path, init_args: tuple[str, ...],
                                                        head: str) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", *init_args, str(remote))
    repo = first_sync(str(remote), tmp_path / "cache")
    assert repo.branch == head
    assert git("--git-dir", str(remote), "for-each-ref", "--format=%(refname)").split() == [f"refs/heads/{head}"]
    clone = tmp_path / "clone"
    git("clone", "-q", str(remote), str(clone))  # what a new user does next: the files are checked out
    assert (clone / "gcr.io" / "google-containers.json").is_file() and (clone / "README.md").is_file()
    assert (clone / "index.html").is_file() and (clone / "CHANGELOG.md").is_file()
    again = first_sync(str(remote), tmp_path / "cache2")  # a second clone of the now non-empty remote agrees
    assert again.branch == head


def test_configured_branch_wins_over_the_remote_head(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "--initial-branch=trunk", str(remote))
    repo = first_sync(remote.resolve().as_uri(), tmp_path / "cache", branch="mirror")
    assert repo.branch == "mirror"
    assert git("--git-dir", str(remote), "for-each-ref", "--format=%(refname)").split() == ["refs/heads/mirror"]
