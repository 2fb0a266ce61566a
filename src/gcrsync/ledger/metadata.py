"""The metadata repository: ledgers + CHANGELOG in a directory, usually a git clone that is pushed.

Where it lives (MetadataRepo.open):
- a plain directory: used as is, no git (publish only writes the changelog);
- a directory with its own .git (the user's work tree): commits only the files gcrsync wrote, never fetches
  or resets on open, pushes to `origin` if there is one;
- a git URL (https://, http://, ssh://, git://, file://, user@host:path) or the path of a bare repository:
  a clone we own under cache_dir, fetched on every open;
- nothing: a local git repository under the user's data directory.

Races: two runs may publish to the same remote. A rejected push is never forced: we fetch, rebuild our
commit on top of the remote (ledgers merged entry by entry, newest last_synced wins; our CHANGELOG blocks
re-prepended on top of theirs) and push again. The same rebuild runs on open() when a previous run left a
commit that could not be pushed (remote down), so such a commit is pushed later and never discarded.
Several unpushed local commits are squashed into one by the rebuild.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from gcrsync.errors import LedgerError
from gcrsync.ledger import changelog
from gcrsync.ledger.catalog import RunInfo
from gcrsync.ledger.catalogfiles import CATALOG_JSON, GENERATED, catalog_present, write_repo_catalog
from gcrsync.ledger.files import TMP_PREFIX, LedgerFiles, atomic_write, merge_ledger_texts
from gcrsync.ledger.git import Git, strip_userinfo
from gcrsync.ledger.locations import default_metadata_dir, is_bare_repo, slug
from gcrsync.ledger.lock import RepoLocked, pid_lock
from gcrsync.ledger.remotehead import empty_remote_head

log = logging.getLogger(__name__)

CHANGELOG = "CHANGELOG.md"
DEFAULT_BRANCH = "main"
MAX_PUSH_ATTEMPTS = 5
RECOVER_MESSAGE = "gcrsync: record metadata left uncommitted by an interrupted run"
_GIT_LOCK_FILES = ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "packed-refs.lock", "config.lock", "shallow.lock")
_URL_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)")
# A push that lost a race: either refused as non-fast-forward, or (two pushes in flight at once) the remote
# failed to lock the branch because the other push moved it, or created it, in the meantime.
_REJECTED_RE = re.compile(r"\[rejected\]|non-fast-forward|fetch first|stale info"
                          r"|cannot lock ref '[^']*': (?:is at \w+ but expected|reference already exists)")


class PushFailed(LedgerError):
    """The metadata was committed locally but could not be pushed; the next open()+publish() pushes it."""

    def __init__(self, message: str, *, commit: str) -> None:
        super().__init__(message)
        self.commit = commit


class MetadataRepo:
    def __init__(self, workdir: Path, git: Git | None, *, branch: str = DEFAULT_BRANCH, owned: bool = True,
                 has_remote: bool = False) -> None:
        self.workdir = workdir
        self.git = git
        self.branch = branch
        self.owned = owned  # we created this clone: every change in it is ours to commit or reset
        self.has_remote = has_remote
        self.ledgers = LedgerFiles(workdir)
        self.generated: set[Path] = set()  # catalog files written (see ledger/catalogfiles.py), for _commit

    def __repr__(self) -> str:
        mode = "plain" if self.git is None else ("clone" if self.owned else "work tree")
        return f"MetadataRepo({str(self.workdir)!r}, {mode}, branch={self.branch!r})"

    @property
    def changelog_path(self) -> Path:
        return self.workdir / CHANGELOG

    def close(self) -> None:
        if self.git is not None:
            self.git.close()

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, location: str | None, cache_dir: Path, *, token: str | None = None,
             username: str | None = None, author_name: str = "gcrsync", author_email: str = "gcrsync@localhost",
             branch: str | None = None, data_dir: Path | None = None,
             env: Mapping[str, str] | None = None) -> MetadataRepo:
        """Resolve `location` (see the module docstring), clone or fetch as needed, and return the repo."""
        def make_git(workdir: Path, user: str | None = username, password: str | None = token) -> Git:
            return Git(workdir, env, author_name=author_name, author_email=author_email, username=user,
                       password=password)

        if location is not None and not _URL_RE.match(location):
            path = Path(location).expanduser()
            uri = path.resolve().as_uri()
            # A missing path that was a bare remote (renamed away, unmounted) must not become a new empty
            # work tree: we know it was one from its name or from the clone we keep of it.
            if is_bare_repo(path) or (not path.exists() and (path.name.endswith(".git")
                                                              or (Path(cache_dir) / slug(uri)).is_dir())):
                location = uri
            elif path.is_dir() and not (path / ".git").exists():
                log.info("metadata directory %s is not a git work tree: ledgers are kept without git", path)
                return cls(path, None)
            elif path.is_dir():
                return cls._open_worktree(path, make_git(path), branch)
            elif path.exists():
                raise LedgerError(f"metadata location {location} is not a directory")
        if location is None or not _URL_RE.match(location):
            workdir = Path(location).expanduser() if location else (data_dir or default_metadata_dir(env))
            repo = cls(workdir, make_git(workdir), branch=branch or DEFAULT_BRANCH)
            if not (workdir / ".git").exists():
                workdir.mkdir(parents=True, exist_ok=True)
                repo._git.run("init", "-q", "-b", repo.branch)
                log.info("created local metadata repository %s", workdir)
            repo._exclude_our_files()
            return repo

        url, url_user, url_password = strip_userinfo(location)
        if url_user or url_password:
            log.warning("credentials in the metadata repository URL were removed from it; they are passed to git "
                        "through the environment instead (prefer the token option)")
        workdir = Path(cache_dir) / slug(url)
        git = make_git(workdir, username or url_user, token or url_password)
        fresh = not (workdir / ".git").is_dir()
        repo = cls(workdir, git, has_remote=True)
        try:
            if fresh:
                workdir.mkdir(parents=True, exist_ok=True)
                git.run("init", "-q")
                git.run("remote", "add", "origin", url)
            elif (git.probe("remote", "get-url", "origin") or "").strip() != url:
                git.run("remote", "set-url", "origin", url)
            repo.branch = branch or repo._pick_branch(fresh)
            if fresh:
                git.run("symbolic-ref", "HEAD", f"refs/heads/{repo.branch}")
            repo._exclude_our_files()
            try:
                with repo.lock():
                    repo.refresh(required=fresh)
            except RepoLocked as exc:
                if fresh:
                    raise
                # A sync is running in this clone and fetches/pushes itself. Readers (monitor) use the clone as
                # it is; writers still take the lock themselves and are refused there.
                log.info("%s: using the local clone without fetching", exc)
        except BaseException:
            git.close()
            if fresh:
                shutil.rmtree(workdir, ignore_errors=True)  # never leave a half-made clone behind
            raise
        return repo

    @classmethod
    def _open_worktree(cls, path: Path, git: Git, branch: str | None) -> MetadataRepo:
        current = (git.probe("symbolic-ref", "--short", "-q", "HEAD") or "").strip()
        if not current:
            raise LedgerError(f"metadata work tree {path} is not on a branch (detached HEAD)")
        if branch and branch != current:
            raise LedgerError(f"metadata work tree {path} is on branch {current!r}, not {branch!r}")
        has_remote = git.probe("remote", "get-url", "origin") is not None
        repo = cls(path, git, branch=current, owned=False, has_remote=has_remote)
        repo._exclude_our_files()
        return repo

    @property
    def _git(self) -> Git:
        if self.git is None:
            raise LedgerError(f"metadata directory {self.workdir} is not a git repository")
        return self.git

    def _pick_branch(self, fresh: bool) -> str:
        if not fresh:
            current = (self._git.probe("symbolic-ref", "--short", "-q", "HEAD") or "").strip()
            if current:
                return current
        result = self._git.call("ls-remote", "--symref", "origin", "HEAD")
        if result.returncode != 0:
            if fresh:
                raise LedgerError(f"cannot reach the metadata repository: {self._git.first_error_line(result)}")
            return DEFAULT_BRANCH
        match = re.search(r"^ref: refs/heads/(\S+)\s+HEAD$", result.stdout, re.MULTILINE)
        if match:
            return match.group(1)
        if not result.stdout.strip():
            return empty_remote_head(self._git) or DEFAULT_BRANCH
        return DEFAULT_BRANCH

    def _exclude_our_files(self) -> None:
        """Keep temp files and the plain-dir lock out of `git status` without touching any tracked file."""
        exclude = self.workdir / ".git" / "info" / "exclude"
        with contextlib.suppress(OSError):
            text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
            if f"{TMP_PREFIX}*" not in text.splitlines():
                exclude.parent.mkdir(parents=True, exist_ok=True)
                with exclude.open("a", encoding="utf-8") as fh:
                    fh.write(("" if text.endswith("\n") or not text else "\n") + f"{TMP_PREFIX}*\n")

    # -- locking -------------------------------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        git_dir = self.workdir / ".git"
        return git_dir / "gcrsync.lock" if git_dir.is_dir() else self.workdir / ".gcrsync.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the metadata repository by this process (see ledger/lock.py)."""
        with pid_lock(self.lock_path):
            self._clear_stale_git_locks()
            yield

    def _clear_stale_git_locks(self) -> None:
        """Remove lock files a git command killed together with a previous run left in our own clone.

        A SIGKILL (OOM killer, `systemctl kill`) during `git add`/`commit`/`reset` leaves e.g. .git/index.lock,
        and every later git write in the clone would fail on it forever. Only for a clone we own, and only with
        our flock held: no other process runs git there, so any such file is stale by construction. A user's
        work tree is never touched (their own git may be running).
        """
        if self.git is None or not self.owned:
            return
        git_dir = self.workdir / ".git"
        candidates = [git_dir / name for name in _GIT_LOCK_FILES]
        if (git_dir / "refs").is_dir():
            candidates += sorted((git_dir / "refs").rglob("*.lock"))
        for path in candidates:
            if path.is_file():
                log.warning("removing %s left by an interrupted git command", path.relative_to(self.workdir))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- syncing with the remote ---------------------------------------------------------------------------

    def refresh(self, *, required: bool = False) -> None:
        """Fetch and bring the clone onto the remote branch, rebuilding unpushed local commits on top of it.

        Call with the lock held. An unreachable remote is only a warning (unless `required`, for a first
        clone): the run can still record locally and the commit is pushed next time.
        """
        if self.git is None or not self.has_remote:
            return
        if self.owned and self.git.run("status", "--porcelain").strip():
            self.git.run("add", "-A")
            self.git.run("commit", "-q", "-m", RECOVER_MESSAGE)
        result = self.git.call("fetch", "--prune", "--quiet", "origin")
        if result.returncode != 0:
            reason = self.git.first_error_line(result)
            if required:
                raise LedgerError(f"cannot fetch the metadata repository: {reason}")
            log.warning("cannot fetch the metadata repository, working offline: %s", reason)
            return
        self._integrate()

    def _rev(self, ref: str) -> str | None:
        out = self._git.probe("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        return out.strip() if out else None

    @property
    def _remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _is_ancestor(self, a: str, b: str) -> bool:
        return self._git.call("merge-base", "--is-ancestor", a, b).returncode == 0

    def _integrate(self) -> None:
        remote, head = self._rev(self._remote_ref), self._rev("HEAD")
        if remote is None or head == remote:
            return  # empty remote or up to date
        if head is None or self._is_ancestor(head, remote):
            self._git.run("reset", "-q", "--hard", remote)
        elif not self._is_ancestor(remote, head):
            if not self.owned and self._git.run("status", "--porcelain", "--untracked-files=no").strip():
                raise LedgerError(f"cannot rebuild on the remote: {self.workdir} has uncommitted changes")
            self._rebuild(head, remote)

    def _show(self, commit: str, path: str) -> str | None:
        return self._git.probe("show", f"{commit}:{path}")

    def _rebuild(self, head: str, remote: str) -> None:
        """Replace our diverged commit(s) by one commit on top of `remote` carrying the same changes."""
        git = self._git
        base = (git.probe("merge-base", head, remote) or "").strip() or None
        message = git.run("log", "-1", "--format=%B", head).strip() or RECOVER_MESSAGE
        if base:
            raw = git.run("diff", "--name-status", "--no-renames", "-z", base, head).split("\0")
            changed = [(raw[i], raw[i + 1]) for i in range(0, len(raw) - 1, 2)]
        else:
            changed = [("A", p) for p in git.run("ls-tree", "-r", "--name-only", "-z", head).split("\0") if p]
        ours = {path: (None if status == "D" else self._show(head, path)) for status, path in changed}
        base_blocks = changelog.split_blocks((self._show(base, CHANGELOG) or "") if base else "")
        head_blocks = changelog.split_blocks(self._show(head, CHANGELOG) or "")
        log.info("metadata remote moved on: rebuilding %d changed file(s) on top of %s", len(ours), remote[:12])
        git.run("reset", "-q", "--hard", remote)
        for path, content in ours.items():
            full = self.workdir / path
            if path == CHANGELOG or path in GENERATED:  # regenerated below from the merged ledgers
                continue
            if content is None:
                with contextlib.suppress(FileNotFoundError):
                    full.unlink()
            elif self.ledgers.source_for(path) is not None and full.is_file():
                atomic_write(full, merge_ledger_texts(path, content, full.read_text(encoding="utf-8"),
                                                           self._show(base, path) if base else None))
            else:
                atomic_write(full, content)
        theirs_blocks = changelog.split_blocks(self.changelog_path.read_text(encoding="utf-8")
                                               if self.changelog_path.is_file() else "")
        mine = [b for b in head_blocks if b not in base_blocks and b not in theirs_blocks]
        changelog.prepend_blocks(self.changelog_path, mine)
        if any(path in GENERATED for path in ours):
            self.write_catalog(RunInfo.from_catalog(ours.get(CATALOG_JSON)))
        git.run("add", "-A")
        if git.call("diff", "--cached", "--quiet").returncode != 0:
            git.run("commit", "-q", "-m", message)

    # -- publishing ----------------------------------------------------------------------------------------

    def publish(self, message: str, changes: changelog.RunChanges | None = None, *,
                run_time: datetime | None = None, label: str | None = None) -> str | None:
        """Write the run's CHANGELOG block, commit what changed and push.

        Returns the sha of the commit now on the remote (or, without a remote, the new local commit),
        None when there was nothing to commit or push (always None for a plain directory).
        Raises PushFailed when the commit could not be pushed (it stays local and is pushed next time).
        """
        run_time = run_time or datetime.now(UTC)
        if changes is not None:
            changelog.prepend(self.changelog_path, run_time, changes, label)  # label: e.g. "shard 1/4"
        # A run that changed nothing keeps the recorded run, so that its catalog files stay byte-identical;
        # when it also wrote no ledger, reading every ledger again to regenerate the same files is skipped
        # (at 50,000 tags that was most of a no-op's memory peak and ~2 s).
        quiet = (changes is None or changes.empty) and not self.ledgers.written
        if not (quiet and catalog_present(self.workdir)):
            self.write_catalog(None if changes is None or changes.empty else RunInfo(run_time, len(changes.failed)))
        if self.git is None:
            return None
        committed = self._commit(message)
        if not self.has_remote:
            return committed
        remote, head = self._rev(self._remote_ref), self._rev("HEAD")
        if head is None or head == remote or (remote is not None and self._is_ancestor(head, remote)):
            return committed
        return self._push()

    def _commit(self, message: str) -> str | None:
        git = self._git
        if not git.run("status", "--porcelain").strip():
            return None
        if self.owned:
            git.run("add", "-A")
        else:
            paths = [self.changelog_path, *sorted(self.ledgers.written), *sorted(self.generated)]
            specs = [str(p.relative_to(self.workdir)) for p in paths
                     if p.exists() or git.probe("ls-files", "--error-unmatch", "--", str(p)) is not None]
            if not specs:
                return None
            git.run("add", "-A", "--", *specs)
        if git.call("diff", "--cached", "--quiet").returncode == 0:
            return None
        git.run("commit", "-q", "-m", message)
        return self._rev("HEAD")

    def write_catalog(self, run: RunInfo | None = None) -> None:
        """Regenerate README.md's section, catalog.json, catalog.js and index.html from the ledgers.

        A failure is logged, not raised: the ledgers and CHANGELOG (the record) must still be committed.
        """
        try:
            self.generated.update(write_repo_catalog(self.workdir, run, git=self.git, user_tree=not self.owned,
                                                     ours=self.generated))
        except (OSError, LedgerError) as exc:
            log.error("cannot write the catalog files: %s", exc)

    def _push(self) -> str:
        git = self._git
        for _attempt in range(MAX_PUSH_ATTEMPTS):
            head = self._rev("HEAD") or ""
            result = git.call("push", "--porcelain", "origin", f"HEAD:refs/heads/{self.branch}")
            if result.returncode == 0:
                git.call("update-ref", self._remote_ref, head)  # in case the remote has no fetch refspec
                log.info("pushed metadata commit %s", head[:12])
                return head
            if not _REJECTED_RE.search(result.stdout + result.stderr):
                raise PushFailed(f"metadata committed locally as {head[:12]} but the push failed: "
                                 f"{git.first_error_line(result)}; it will be pushed by the next run", commit=head)
            log.info("metadata push rejected (another run pushed first): fetching and rebuilding")
            fetch = git.call("fetch", "--prune", "--quiet", "origin")
            if fetch.returncode != 0:
                raise PushFailed(f"metadata committed locally as {head[:12]} but fetching failed: "
                                 f"{git.first_error_line(fetch)}; it will be pushed by the next run", commit=head)
            self._integrate()
        head = self._rev("HEAD") or ""
        raise PushFailed(f"metadata committed locally as {head[:12]} but the push was rejected "
                         f"{MAX_PUSH_ATTEMPTS} times; it will be pushed by the next run", commit=head)
