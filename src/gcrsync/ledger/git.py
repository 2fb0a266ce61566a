"""A small typed wrapper over the `git` binary.

Why the binary and not a library: it is what users have, it speaks every transport (https, ssh, file) with
the user's own ssh setup, and it needs no extra dependency.

Credentials: the original gcrsync put the token in the remote URL, which stores it in .git/config and echoes
it in git's error messages. Here an https password/token only ever lives in this process's environment and in
the environment of the git child: GIT_ASKPASS points to a tiny script (in a private 0700 temp dir) that
prints $GCRSYNC_GIT_USERNAME / $GCRSYNC_GIT_PASSWORD. Credential helpers from the user's config are disabled
for our commands so that a `credential.helper=store` cannot write the token to disk either.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from gcrsync.errors import LedgerError

log = logging.getLogger(__name__)

USERNAME_ENV = "GCRSYNC_GIT_USERNAME"
PASSWORD_ENV = "GCRSYNC_GIT_PASSWORD"
DEFAULT_TOKEN_USER = "x-access-token"  # GitHub's documented user for tokens; others accept any non-empty name

_ASKPASS = f"""#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "${USERNAME_ENV}" ;;
  *) printf '%s\\n' "${PASSWORD_ENV}" ;;
esac
"""
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")


def _hide_netloc(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port else "")


def strip_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """Split credentials out of a remote URL: (clean url, username, password).

    For http(s) both user and password move out (they go through GIT_ASKPASS). For ssh only a password is
    removed: the user name is part of the ssh login and harmless; ssh passwords are not supported.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return url, None, None
    if not parts.scheme or "@" not in parts.netloc:
        return url, None, None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    netloc = _hide_netloc(parts)
    if parts.scheme in ("http", "https"):
        return urlunsplit(parts._replace(netloc=netloc)), user, password
    if password is not None:
        return urlunsplit(parts._replace(netloc=f"{parts.username}@{netloc}")), None, password
    return url, None, None


class Git:
    """Runs git in one work tree with a fixed identity and (optional) https credentials from the environment.

    Use as a context manager, or call close(), to remove the askpass script directory.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        author_name: str = "gcrsync",
        author_email: str = "gcrsync@localhost",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self._author = (author_name, author_email)
        self._secrets = [s for s in (password,) if s]
        self._env = dict(os.environ if env is None else env)
        # Stable, parseable output (we look for "[rejected]") and never an interactive prompt.
        self._env.update({"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"})
        self._askpass_dir: str | None = None
        if password:
            self._askpass_dir = tempfile.mkdtemp(prefix="gcrsync-askpass-")
            os.chmod(self._askpass_dir, 0o700)
            script = Path(self._askpass_dir) / "askpass.sh"
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
            with os.fdopen(fd, "w") as fh:
                fh.write(_ASKPASS)
            self._env.update({"GIT_ASKPASS": str(script), USERNAME_ENV: username or DEFAULT_TOKEN_USER,
                              PASSWORD_ENV: password})
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._askpass_dir, True)

    def __repr__(self) -> str:
        return f"Git({str(self.workdir)!r}, credentials={'yes' if self._secrets else 'no'})"

    def __enter__(self) -> Git:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._askpass_dir is not None:
            self._finalizer()
            self._askpass_dir = None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _USERINFO_RE.sub("***@", text)

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        name, email = self._author
        argv = ["git", "-c", f"user.name={name}", "-c", f"user.email={email}"]
        if self._secrets:
            argv += ["-c", "credential.helper="]  # an empty value resets the helper list
        return [*argv, *args]

    def call(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run git and return the result whatever the exit status (for probes and push parsing)."""
        log.debug("git %s (in %s)", " ".join(args), cwd or self.workdir)
        try:
            return subprocess.run(self._argv(args), cwd=cwd or self.workdir, env=self._env, capture_output=True,
                                  text=True, encoding="utf-8", errors="replace", stdin=subprocess.DEVNULL,
                                  check=False)
        except OSError as exc:
            raise LedgerError(f"cannot run git: {exc}") from None

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """Run git, return stdout; on failure raise LedgerError with the first line of stderr (redacted)."""
        result = self.call(*args, cwd=cwd)
        if result.returncode != 0:
            raise LedgerError(f"git {args[0] if args else ''} failed: {self.first_error_line(result)}")
        return result.stdout

    def probe(self, *args: str) -> str | None:
        """stdout, or None if git failed (for questions like 'does this ref exist')."""
        result = self.call(*args)
        return result.stdout if result.returncode == 0 else None

    def first_error_line(self, result: subprocess.CompletedProcess[str]) -> str:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        # Prefer git's own "fatal:"/"error:" line over hints and progress noise.
        picked = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[0] if lines else "")
        return self.redact(picked)[:300] or f"exit status {result.returncode}"
