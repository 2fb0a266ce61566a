"""MetadataRepo against real git: bare repositories as remotes, plus a smart-HTTP remote with Basic auth."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gcrsync.errors import LedgerError
from gcrsync.ledger.catalogfiles import GENERATED
from gcrsync.ledger.changelog import Added, RunChanges, Updated, short_digest
from gcrsync.ledger.locations import default_metadata_dir
from gcrsync.ledger.metadata import MetadataRepo, PushFailed

SRC = "gcr.io/google-containers"
TGT = "docker.io/gcrxio"
T0 = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)
LEDGER = "gcr.io/google-containers.json"


def dg(n: int) -> str:
    return "sha256:" + f"{n:012x}" + "b" * 52


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git config may influence (or be changed by) these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_ASKPASS", raising=False)
    monkeypatch.delenv("SSH_ASKPASS", raising=False)


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(path))  # an empty remote's HEAD is the branch we push to
    return path


def commits(bare: Path, branch: str = "main") -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(bare), "rev-list", branch], capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def show(bare: Path, path: str, branch: str = "main") -> str:
    return git("--git-dir", str(bare), "show", f"{branch}:{path}")


def open_repo(location: str | Path | None, cache: Path, **kw: object) -> MetadataRepo:
    return MetadataRepo.open(None if location is None else str(location), cache, author_name="gcrsync-test",
                             author_email="test@example.invalid", **kw)  # type: ignore[arg-type]


def record(repo: MetadataRepo, name: str, n: int, *, now: datetime = T0, source: str = SRC) -> RunChanges:
    ledger = repo.ledgers.load(source, TGT)
    old = ledger.get(name, "1")
    result = ledger.record(name, "1", digest=dg(n), target_ref=f"{TGT}/{name}:1", media_type=None, now=now)
    repo.ledgers.save(ledger)
    src, tgt = f"{source}/{name}:1", f"{TGT}/{name}:1"
    if result == "added":
        return RunChanges(added=[Added(src, tgt, dg(n))])
    return RunChanges(updated=[Updated(src, tgt, old.digest if old else None, dg(n))])


def remote_images(bare: Path, path: str = LEDGER) -> dict[str, dict[str, dict[str, object]]]:
    images: dict[str, dict[str, dict[str, object]]] = json.loads(show(bare, path))["images"]
    return images


def test_publish_then_nothing_to_publish(remote: Path, tmp_path: Path) -> None:
    repo = open_repo(remote, tmp_path / "cache")
    assert repo.branch == "main" and repo.has_remote
    changes = record(repo, "pause", 1)
    changes.extend(record(repo, "etcd", 2))
    sha = repo.publish("sync gcr.io/google-containers", changes, run_time=T0)
    assert sha is not None and commits(remote) == [sha]
    images = remote_images(remote)
    assert images["pause"]["1"]["digest"] == dg(1) and images["etcd"]["1"]["digest"] == dg(2)
    log = show(remote, "CHANGELOG.md")
    assert "## 2026-11-29 03:00:00 UTC" in log
    assert f"`{SRC}/pause:1` → `{TGT}/pause:1` ({short_digest(dg(1))})" in log and f"`{SRC}/etcd:1`" in log
    assert git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>%n%s", "main").splitlines() == [
        "gcrsync-test <test@example.invalid>", "sync gcr.io/google-containers"]
    assert repo.publish("again", RunChanges(), run_time=T0) is None
    assert commits(remote) == [sha]
    again = open_repo(remote, tmp_path / "cache")  # reopening the same clone is a no-op
    assert again.workdir == repo.workdir and again.publish("x") is None and commits(remote) == [sha]


def test_updated_entry_keeps_history(remote: Path, tmp_path: Path) -> None:
    repo = open_repo(remote, tmp_path / "cache")
    repo.publish("first", record(repo, "pause", 1), run_time=T0)
    repo = open_repo(remote, tmp_path / "cache")
    changes = record(repo, "pause", 2, now=T0 + timedelta(days=1))
    assert changes.updated and changes.updated[0].old_digest == dg(1)
    repo.publish("second", changes, run_time=T0 + timedelta(days=1))
    assert len(commits(remote)) == 2
    entry = remote_images(remote)["pause"]["1"]
    assert entry["digest"] == dg(2) and entry["previous_digests"] == [dg(1)]
    assert entry["first_synced"] == "2026-11-29T03:00:00Z" and entry["last_synced"] == "2026-11-30T03:00:00Z"
    log = show(remote, "CHANGELOG.md")
    assert f"({short_digest(dg(1))} → {short_digest(dg(2))})" in log
    assert log.index("## 2026-11-30") < log.index("## 2026-11-29")


@pytest.mark.parametrize("seeded", [False, True], ids=["empty-remote", "seeded-remote"])
def test_two_working_copies_race(remote: Path, tmp_path: Path, seeded: bool) -> None:
    if seeded:
        seed = open_repo(remote, tmp_path / "seed")
        seed.publish("seed", record(seed, "seeded", 9), run_time=T0 - timedelta(days=1))
    a = open_repo(remote, tmp_path / "a")
    b = open_repo(remote, tmp_path / "b")
    changes_a = record(a, "pause", 1, now=T0)
    changes_a.extend(record(a, "shared", 3, now=T0))
    sha_a = a.publish("run a", changes_a, run_time=T0)
    t1 = T0 + timedelta(minutes=5)
    changes_b = record(b, "etcd", 2, now=t1)
    changes_b.extend(record(b, "shared", 4, now=t1))  # same tag, newer copy: must win
    changes_b.extend(record(b, "app", 5, now=t1, source="quay.io/team"))
    sha_b = b.publish("run b", changes_b, run_time=t1)  # rejected first: non-fast-forward
    assert sha_b is not None and sha_b != sha_a
    history = commits(remote)
    assert history[:2] == [sha_b, sha_a] and len(history) == (3 if seeded else 2)  # linear, nothing forced
    images = remote_images(remote)
    assert {name for name in images} == {"pause", "etcd", "shared"} | ({"seeded"} if seeded else set())
    assert images["shared"]["1"]["digest"] == dg(4) and images["shared"]["1"]["previous_digests"] == [dg(3)]
    assert remote_images(remote, "quay.io/team.json")["app"]["1"]["digest"] == dg(5)
    log = show(remote, "CHANGELOG.md")
    assert log.count("## 2026-11-29 03:05:00 UTC") == 1 and log.count("## 2026-11-29 03:00:00 UTC") == 1
    assert log.index("03:05:00") < log.index("03:00:00")
    assert log.count("# Changelog") == 1
    assert git("--git-dir", str(remote), "log", "-1", "--format=%s", "main").strip() == "run b"
    assert not git("status", "--porcelain", cwd=b.workdir).strip()


def test_unreachable_remote_then_pushed_later(remote: Path, tmp_path: Path) -> None:
    repo = open_repo(remote, tmp_path / "cache")
    repo.publish("first", record(repo, "pause", 1), run_time=T0)
    away = tmp_path / "away.git"
    remote.rename(away)
    offline = open_repo(remote, tmp_path / "cache")  # fetch fails: a warning, the clone is still usable
    changes = record(offline, "etcd", 2)
    with pytest.raises(PushFailed, match=r"committed locally as \w+ but the push failed") as info:
        offline.publish("offline run", changes, run_time=T0)
    local = json.loads((offline.workdir / LEDGER).read_text())["images"]
    assert set(local) == {"pause", "etcd"}
    assert git("rev-parse", "HEAD", cwd=offline.workdir).strip() == info.value.commit
    away.rename(remote)
    # Meanwhile another run pushed something else: the unpushed commit must be rebuilt, not discarded.
    other = open_repo(remote, tmp_path / "other")
    other.publish("other run", record(other, "coredns", 3, now=T0 + timedelta(hours=1)),
                  run_time=T0 + timedelta(hours=1))
    back = open_repo(remote, tmp_path / "cache")
    sha = back.publish("next run")  # nothing new in this run, but the pending commit goes out
    assert sha is not None and commits(remote)[0] == sha
    assert set(remote_images(remote)) == {"pause", "etcd", "coredns"}
    assert git("--git-dir", str(remote), "log", "-1", "--format=%s", "main").strip() == "offline run"
    assert show(remote, "CHANGELOG.md").count("`gcr.io/google-containers/etcd:1`") == 1


def test_first_clone_of_unreachable_remote_fails_cleanly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(LedgerError, match="cannot reach the metadata repository"):
        open_repo("file://" + str(tmp_path / "missing.git"), cache)
    assert not any(cache.iterdir())


def test_interrupted_run_is_recovered_on_open(remote: Path, tmp_path: Path) -> None:
    repo = open_repo(remote, tmp_path / "cache")
    record(repo, "pause", 1)  # saved but never published (crash)
    again = open_repo(remote, tmp_path / "cache")
    assert again.ledgers.load(SRC, TGT).get("pause", "1") is not None
    assert again.publish("next") is not None
    assert "pause" in remote_images(remote)


def test_legacy_file_migration_commit(remote: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    git("clone", "-q", str(remote), str(seed))
    (seed / "google-containers").write_text(json.dumps(["pause:3.1"], indent=4))
    git("add", ".", cwd=seed)
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "legacy", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    repo = open_repo(remote, tmp_path / "cache")
    ledger = repo.ledgers.load(SRC, TGT)
    assert ledger.get("pause", "3.1") is not None and ledger.get("pause", "3.1").legacy  # type: ignore[union-attr]
    repo.ledgers.save(ledger)
    assert repo.publish("migrate legacy ledger") is not None
    files = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    assert files == sorted([LEDGER, *GENERATED])
    assert remote_images(remote)["pause"]["3.1"]["legacy"] is True


def test_broken_ledger_in_repo_refused_untouched(remote: Path, tmp_path: Path) -> None:
    repo = open_repo(remote, tmp_path / "cache")
    path = repo.ledgers.path_for(SRC)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"format": "gcrsync-ledger/1", "source": SRC, "target": "t", "images": {"../x": {}}}))
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=r"google-containers\.json: invalid image name '\.\./x'"):
        repo.ledgers.load(SRC, TGT)
    assert path.read_bytes() == before


# -- credentials ------------------------------------------------------------------------------------------


class _GitHTTP(BaseHTTPRequestHandler):
    """Smart-HTTP git behind Basic auth, via `git http-backend` (CGI)."""

    root: Path
    user: str
    password: str
    auth_seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        header = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if header != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.auth_seen.append(self.path)
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": self.user,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.environ["GIT_CONFIG_GLOBAL"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[str, _GitHTTP]]:
    root = tmp_path / "srv"
    git("init", "-q", "--bare", str(root / "meta.git"))
    git("config", "http.receivepack", "true", cwd=root / "meta.git")
    handler = type("H", (_GitHTTP,), {"root": root, "user": "bot", "password": "tok-S3CRET-42", "auth_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/meta.git", handler  # type: ignore[misc]
    server.shutdown()
    thread.join()


def assert_secret_absent(secret: str, repo: MetadataRepo, log_text: str, err: str = "") -> None:
    assert secret not in (repo.workdir / ".git" / "config").read_text()
    assert secret not in git("log", "-p", "--all", cwd=repo.workdir)
    for path in repo.workdir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in log_text and secret not in err and secret not in repr(repo)


def test_token_only_through_askpass(http_remote: tuple[str, _GitHTTP], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    url, handler = http_remote
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LedgerError) as denied:  # without the token the server refuses: auth is really needed
        open_repo(url, tmp_path / "nocreds")
    assert "cannot reach" in str(denied.value)
    repo = open_repo(url, tmp_path / "cache", token=handler.password, username=handler.user)
    sha = repo.publish("via http", record(repo, "pause", 1), run_time=T0)
    assert sha is not None and handler.auth_seen
    assert commits(handler.root / "meta.git") == [sha]
    assert_secret_absent(handler.password, repo, caplog.text)
    assert repo.git is not None
    askpass_dir = Path(repo.git._env["GIT_ASKPASS"]).parent
    repo.close()
    assert not askpass_dir.exists()


def test_userinfo_in_url_is_stripped(http_remote: tuple[str, _GitHTTP], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    url, handler = http_remote
    caplog.set_level(logging.DEBUG)
    with_creds = url.replace("http://", f"http://{handler.user}:{handler.password}@")
    repo = open_repo(with_creds, tmp_path / "cache")
    assert "credentials in the metadata repository URL were removed" in caplog.text
    assert git("remote", "get-url", "origin", cwd=repo.workdir).strip() == url
    sha = repo.publish("via http", record(repo, "pause", 1), run_time=T0)
    assert sha is not None and commits(handler.root / "meta.git") == [sha]
    assert_secret_absent(handler.password, repo, caplog.text)


def test_push_failure_message_has_no_secret(remote: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "tok-NEVER-SHOWN"
    repo = open_repo(remote, tmp_path / "cache", token=secret)
    git("remote", "set-url", "origin", f"http://127.0.0.1:9/{secret}/x.git", cwd=repo.workdir)
    with pytest.raises(PushFailed) as info:
        repo.publish("x", record(repo, "pause", 1), run_time=T0)
    assert secret not in str(info.value) and "***" in str(info.value)
    assert secret not in caplog.text.replace(f"/{secret}/", "")  # only the URL we planted ourselves


# -- other locations ---------------------------------------------------------------------------------------


def test_plain_directory_without_git(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    repo = open_repo(plain, tmp_path / "cache")
    assert repo.git is None
    assert repo.publish("x", record(repo, "pause", 1), run_time=T0) is None
    assert (plain / LEDGER).is_file() and (plain / "CHANGELOG.md").is_file() and not (plain / ".git").exists()
    assert repo.lock_path == plain / ".gcrsync.lock"


def test_default_location_is_a_local_git_repo(tmp_path: Path) -> None:
    data = tmp_path / "xdg" / "gcrsync" / "metadata"
    assert default_metadata_dir({"XDG_DATA_HOME": str(tmp_path / "xdg")}) == data
    assert default_metadata_dir({"HOME": "/home/u"}) == Path("/home/u/.local/share/gcrsync/metadata")
    repo = open_repo(None, tmp_path / "cache", data_dir=data)
    assert (data / ".git").is_dir() and not repo.has_remote
    sha = repo.publish("local", record(repo, "pause", 1), run_time=T0)
    assert sha == git("rev-parse", "HEAD", cwd=data).strip()
    assert git("branch", "--show-current", cwd=data).strip() == "main"
    assert repo.publish("nothing") is None


def test_user_work_tree_commits_only_our_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    git("init", "-q", "-b", "trunk", str(tree))
    (tree / "notes.txt").write_text("mine\n")
    repo = open_repo(tree, tmp_path / "cache")
    assert not repo.owned and repo.branch == "trunk"
    sha = repo.publish("sync", record(repo, "pause", 1), run_time=T0)
    assert sha is not None
    assert sorted(git("ls-tree", "-r", "--name-only", "HEAD", cwd=tree).split()) == sorted(
        ["CHANGELOG.md", LEDGER, *GENERATED])
    assert "?? notes.txt" in git("status", "--porcelain", cwd=tree)
    with pytest.raises(LedgerError, match="not 'main'"):
        open_repo(tree, tmp_path / "cache", branch="main")


# -- locking ------------------------------------------------------------------------------------------------


def test_lock_refused_in_same_process(tmp_path: Path) -> None:
    repo = open_repo(None, tmp_path / "cache", data_dir=tmp_path / "meta")
    with repo.lock():
        assert repo.lock_path.read_text().strip() == str(os.getpid())
        with pytest.raises(LedgerError, match=f"locked by pid {os.getpid()}"), repo.lock():
            pass
    assert not repo.lock_path.exists()
    with repo.lock():  # released properly
        pass


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    repo = open_repo(None, tmp_path / "cache", data_dir=tmp_path / "meta")
    code = ("import sys; from pathlib import Path; from gcrsync.ledger.metadata import MetadataRepo\n"
            f"repo = MetadataRepo(Path({str(repo.workdir)!r}), None)\n"
            "with repo.lock():\n    print('locked', flush=True); sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerError, match=f"locked by pid {child.pid}"), repo.lock():
            pass
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        assert child.wait() == 0
    with repo.lock():  # the child released it
        pass


def test_stale_lock_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = open_repo(None, tmp_path / "cache", data_dir=tmp_path / "meta")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    repo.lock_path.write_text(f"{dead.pid}\n")
    with caplog.at_level(logging.WARNING), repo.lock():
        assert repo.lock_path.read_text().strip() == str(os.getpid())
    assert f"stale metadata lock left by pid {dead.pid}" in caplog.text
