"""Which branch does an empty remote expect? (the first push of a new metadata repository goes there)

Pushing to `main` while an empty bare repository's HEAD names `master` (what `git init --bare` makes) leaves
every clone of it with nothing checked out. git 2.39's `ls-remote --symref` shows no HEAD for an empty
repository, but `git clone` learns it (protocol v2 "unborn" HEAD), so we clone the empty remote into a
throw-away directory and read the clone's HEAD.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from gcrsync.ledger.git import Git

log = logging.getLogger(__name__)

# A remote that cannot tell (protocol v0) leaves the clone on init.defaultBranch: a name no branch has
# therefore means "unknown" (and the caller falls back to its default).
_UNKNOWN = "gcrsync-unknown-head"


def empty_remote_head(git: Git) -> str | None:
    """The branch the (empty) `origin` remote's HEAD names, or None if it cannot be learnt."""
    url = (git.probe("remote", "get-url", "origin") or "").strip()
    if not url:
        return None
    with tempfile.TemporaryDirectory(prefix="gcrsync-head-") as tmp:
        probe = Path(tmp) / "probe.git"
        result = git.call("-c", f"init.defaultBranch={_UNKNOWN}", "clone", "-q", "--bare", "--", url, str(probe),
                          cwd=Path(tmp))
        if result.returncode != 0:
            log.debug("cannot learn the empty remote's HEAD: %s", git.first_error_line(result))
            return None
        head = git.call("--git-dir", str(probe), "symbolic-ref", "--short", "-q", "HEAD", cwd=Path(tmp))
    branch = head.stdout.strip()
    return branch if head.returncode == 0 and branch and branch != _UNKNOWN else None
