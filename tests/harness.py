"""Real-registry test harness: start ``docker-registry`` (distribution 2.8) processes and drive skopeo.

Fixtures in conftest.py wrap ``start_registry``; tests import the helpers from here (``from harness import
...``). Every server binds 127.0.0.1 on a free port with filesystem storage under a pytest tmp dir.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from tools.imagefactory import RegistryPusher, manifest_digest

from tokenissuer import TokenIssuer

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO_BIN = "skopeo"
AuthMode = Literal["none", "basic", "token"]

# Gorilla's combined access log, which distribution writes to stdout for *every* request (the logrus
# "response completed" lines on stderr skip some error paths, e.g. 401s from the auth layer).
_ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) ')
_SYNC_PARAM = "harness-sync="
_repo_counter = itertools.count(1)


class LoggedRequest(NamedTuple):
    """One request as the registry logged it; compares equal to a plain (method, path, status) tuple."""

    method: str
    path: str
    status: int


#: Type of the ``make_registry`` fixture: call with ``start_registry`` keyword options.
MakeRegistry = Callable[..., "RegistryServer"]


class HarnessError(RuntimeError):
    """A test-infrastructure failure (registry would not start, skopeo failed)."""


def unique_repo(prefix: str = "t") -> str:
    """A repository name no other test uses: ``prefix`` (may contain '/') + counter + random suffix."""
    return f"{prefix}-{next(_repo_counter)}-{uuid.uuid4().hex[:8]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _die_with_parent() -> None:
    """Child-side: have the kernel SIGTERM the registry if pytest dies, so no server outlives a killed run."""
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry (distribution only accepts bcrypt); password fed on stdin, not argv."""
    proc = subprocess.run(
        ["htpasswd", "-niB", username], input=password, capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout.strip() + "\n"


class RegistryServer:
    """A running distribution registry. ``username``/``password`` are None for an anonymous registry."""

    def __init__(
        self,
        *,
        port: int,
        workdir: Path,
        process: subprocess.Popen[bytes],
        auth: AuthMode,
        username: str | None,
        password: str | None,
        issuer: TokenIssuer | None,
        owns_issuer: bool,
    ) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.storage = workdir / "data"
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "registry.log"
        self.auth = auth
        self.username = username
        self.password = password
        self.issuer = issuer
        self._owns_issuer = owns_issuer
        self._process = process
        self._offset = 0
        self._sync_counter = itertools.count(1)

    def __repr__(self) -> str:  # no password
        return f"RegistryServer({self.url}, auth={self.auth!r}, username={self.username!r})"

    @property
    def creds(self) -> str | None:
        """``user:password`` for skopeo helpers, or None."""
        return None if self.username is None else f"{self.username}:{self.password}"

    def pusher(self) -> RegistryPusher:
        return RegistryPusher(self.url, self.username, self.password)

    def ref(self, repo: str, ref: str = "latest") -> str:
        """A skopeo ``docker://`` reference; ``ref`` is a tag or a ``sha256:`` digest."""
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"docker://{self.host}/{repo}{sep}{ref}"

    # -- request log ----------------------------------------------------------------------------------------
    def _read_log(self) -> list[LoggedRequest]:
        out = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                out.append(LoggedRequest(m.group(1), m.group(2), int(m.group(3))))
        return out

    def _sync(self) -> list[LoggedRequest]:
        """Make a marker request and read the log until it shows up, then return all non-marker entries.

        The access log line is written after the response: for a large body a client may finish reading
        before the line lands. Requests made before the marker are logged before it (in practice: the log
        write follows the last body write within microseconds, far less than a new request round trip).
        """
        marker = f"{_SYNC_PARAM}{next(self._sync_counter)}"
        req = urllib.request.Request(f"{self.url}/v2/?{marker}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with contextlib.suppress(urllib.error.HTTPError), opener.open(req, timeout=10) as r:
            r.read()
        deadline = time.monotonic() + 10
        while True:  # readiness polling, not a timing assumption
            entries = self._read_log()
            if any(e.path.endswith("?" + marker) for e in entries):
                return [e for e in entries if _SYNC_PARAM not in e.path]
            if time.monotonic() > deadline:
                raise HarnessError(f"registry {self.host} never logged the sync request")
            time.sleep(0.005)

    def requests(self) -> list[LoggedRequest]:
        """(method, path_with_query, status) of every request since start or the last clear_requests()."""
        return self._sync()[self._offset :]

    def clear_requests(self) -> None:
        self._offset = len(self._sync())

    # -- lifecycle ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._owns_issuer and self.issuer is not None:
            self.issuer.stop()


def _wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll /v2/ until any HTTP answer (401 counts: the server is up). False if the process died."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with opener.open(f"{url}/v2/", timeout=2) as r:
                r.read()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.01)
    return False


def start_registry(
    workdir: Path,
    *,
    auth: AuthMode = "none",
    schema1: bool = False,
    username: str | None = None,
    password: str | None = None,
    issuer: TokenIssuer | None = None,
    extra_config: dict[str, Any] | None = None,
) -> RegistryServer:
    """Start ``docker-registry serve`` in ``workdir``; caller must ``stop()`` it.

    ``auth="basic"`` uses an htpasswd file; ``auth="token"`` points at ``issuer`` (a fresh TokenIssuer for
    ``username``/``password`` if None). ``extra_config`` is deep-merged into the generated config, e.g.
    ``{"storage": {"maintenance": {"readonly": {"enabled": True}}}}``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    owns_issuer = False
    if auth != "none":
        username = username or "alice"
        password = password or f"pw-{uuid.uuid4().hex[:12]}"
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"secret": uuid.uuid4().hex, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if auth == "basic":
        assert username is not None and password is not None
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(_htpasswd_line(username, password))
        config["auth"] = {"htpasswd": {"realm": "gcrsync-test", "path": str(htpasswd)}}
    elif auth == "token":
        if issuer is None:
            assert username is not None and password is not None
            issuer = TokenIssuer({username: password}).start()
            owns_issuer = True
        config["auth"] = {
            "token": {
                "realm": issuer.realm,
                "service": issuer.service,
                "issuer": issuer.issuer,
                "rootcertbundle": str(issuer.write_cert(workdir / "token-root.pem")),
            }
        }
    if schema1:
        config["compatibility"] = {"schema1": {"enabled": True}}
    if extra_config:
        config = _deep_merge(config, extra_config)

    # Registry env overrides (REGISTRY_*) would silently change the config under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    last_err = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind; retry on another
        port = _free_port()
        config["http"]["addr"] = f"127.0.0.1:{port}"
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))  # YAML is a JSON superset
        with (workdir / "access.log").open("wb") as out, (workdir / "registry.log").open("wb") as err:
            process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        server = RegistryServer(
            port=port, workdir=workdir, process=process, auth=auth, username=username, password=password,
            issuer=issuer, owns_issuer=owns_issuer,
        )  # fmt: skip
        if _wait_ready(server.url, process, time.monotonic() + 15):
            server.clear_requests()  # readiness probes are not the test's requests
            return server
        server.stop()
        last_err = (workdir / "registry.log").read_text(errors="replace")[-2000:]
    if owns_issuer and issuer is not None:
        issuer.stop()
    raise HarnessError(f"docker-registry failed to start: {last_err}")


# -- skopeo ---------------------------------------------------------------------------------------------
def _with_transport(ref: str) -> str:
    return ref if re.match(r"^[a-z-]+:", ref) and not re.match(r"^[\w.-]+:\d+/", ref) else f"docker://{ref}"


@contextlib.contextmanager
def _authfile(ref: str, creds: str | None) -> Iterator[str]:
    """A temporary auth.json for skopeo, so credentials never appear on a command line; always removed."""
    auths: dict[str, Any] = {}
    if creds is not None and ref.startswith("docker://"):
        host = ref[len("docker://") :].split("/", 1)[0]
        auths[host] = {"auth": base64.b64encode(creds.encode()).decode()}
    fd, path = tempfile.mkstemp(prefix="skopeo-auth-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
        yield path
    finally:
        os.unlink(path)


def _tls_flag(ref: str, flag: str) -> list[str]:
    return [f"{flag}=false"] if ref.startswith("docker://") else []


def _run_skopeo(args: Sequence[str]) -> bytes:
    if shutil.which(SKOPEO_BIN) is None:
        raise HarnessError("skopeo is not installed")
    proc = subprocess.run([SKOPEO_BIN, *args], capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise HarnessError(f"skopeo {args[0]} failed: {proc.stderr.decode(errors='replace').strip()[-1500:]}")
    return proc.stdout


def skopeo_raw(ref: str, creds: str | None = None) -> bytes:
    """``skopeo inspect --raw`` of ``ref``.

    ``ref`` is ``docker://host/repo:tag``, ``host/repo@sha256:...`` (docker:// assumed) or ``oci:dir:tag``.
    """
    ref = _with_transport(ref)
    with _authfile(ref, creds) as auth:
        return _run_skopeo(["inspect", "--raw", "--authfile", auth, *_tls_flag(ref, "--tls-verify"), ref])


def skopeo_digest(ref: str, creds: str | None = None) -> str:
    """The manifest digest of ``ref`` as skopeo fetched it (schema1: over the unsigned payload)."""
    return manifest_digest(skopeo_raw(ref, creds))


def skopeo_copy_all(
    src: str,
    dst: str,
    *,
    src_creds: str | None = None,
    dst_creds: str | None = None,
    extra_args: Sequence[str] = (),
) -> None:
    """``skopeo copy --all`` (every platform of an index, digests preserved) from ``src`` to ``dst``."""
    src, dst = _with_transport(src), _with_transport(dst)
    with _authfile(src, src_creds) as src_auth, _authfile(dst, dst_creds) as dst_auth:
        _run_skopeo(
            [
                "copy", "--all", "--preserve-digests", "--insecure-policy", "--quiet",
                "--src-authfile", src_auth, "--dest-authfile", dst_auth,
                *_tls_flag(src, "--src-tls-verify"), *_tls_flag(dst, "--dest-tls-verify"),
                *extra_args, src, dst,
            ]
        )  # fmt: skip
