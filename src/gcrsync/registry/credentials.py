"""Find the credentials to use for a registry host.

Sources, highest priority first:

1. explicit per-host overrides (from the config file or the command line);
2. per-host environment variables: the config names the variables, e.g. ``{"ghcr.io": ("GH_USER",
   "GH_TOKEN")}``, and their values are read only when that host is first used (see env_credential);
3. Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers[host]``, else ``credsStore``, runs ``docker-credential-<name> get``; if the helper has
   nothing for the host, the ``auths`` entry is used (as containers/image does; Docker itself stops at the
   helper).

Hosts are compared after normalisation (lowercase, scheme and path dropped, Docker Hub's aliases merged), so
an ``auths`` key may be ``https://index.docker.io/v1/``, ``docker.io``, ``host:port`` or a full URL.

Secrets never leave this module except inside a Credential, whose repr redacts them. Error messages name
the file, host or helper, never a value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcrsync.errors import AuthError, ConfigError
from gcrsync.secretfiles import check_permissions

log = logging.getLogger("gcrsync")

HUB_HOST = "docker.io"
HUB_SERVER_URL = "https://index.docker.io/v1/"  # the key `docker login` uses for Docker Hub
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
TOKEN_USERNAME = "<token>"  # credential-helper convention: the secret is an identity token
HELPER_TIMEOUT = 60.0  # generous: some helpers (gcloud) refresh a token over the network
_NOT_FOUND = "credentials not found"


@dataclass(frozen=True, repr=False)
class Credential:
    """What to authenticate with. Any field may be None; an all-None Credential means anonymous."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # an OAuth2 refresh token (Docker's "identitytoken")
    registry_token: str | None = None  # a bearer token to send as is (Docker's "registrytoken")

    def __repr__(self) -> str:
        def mask(value: str | None) -> str:
            return "None" if value is None else "'<redacted>'"

        return (
            f"Credential(username={self.username!r}, password={mask(self.password)},"
            f" identity_token={mask(self.identity_token)}, registry_token={mask(self.registry_token)})"
        )

    __str__ = __repr__

    @property
    def is_anonymous(self) -> bool:
        return not (self.password or self.identity_token or self.registry_token)


def normalize_host(host: str) -> str:
    """``https://Index.Docker.io/v1/`` -> ``docker.io``; ``http://localhost:5000/x`` -> ``localhost:5000``."""
    text = host.strip()
    lowered = text.lower()
    for scheme in ("https://", "http://"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.partition("/")[0].lower()
    return HUB_HOST if text in _HUB_ALIASES else text


def _server_url(host: str) -> str:
    """The server address credential helpers and ``auths`` use for a normalised host."""
    return HUB_SERVER_URL if host == HUB_HOST else host


def env_credential(user_var: str, password_var: str, environ: Mapping[str, str] | None = None) -> Credential:
    """Build a Credential from two environment variables, named (not valued) in the configuration."""
    env = os.environ if environ is None else environ
    values = []
    for var, what in ((user_var, "username"), (password_var, "password")):
        value = env.get(var)
        if not value:
            raise ConfigError(f"environment variable {var} (registry {what}) is not set or empty")
        values.append(value)
    return Credential(username=values[0], password=values[1])


def _decode_auth(path: Path, key: str, value: str) -> tuple[str, str]:
    """Decode an ``auths[key].auth`` value (base64 of ``user:password``), as Docker's decodeAuth does."""
    text = "".join(value.split())
    problem = None
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        problem = "is not valid base64"
    else:
        username, sep, password = decoded.partition(":")
        if not sep or not username.strip("\0"):
            problem = "does not decode to user:password"
        else:
            return username.strip("\0"), password.strip("\0")
    raise ConfigError(f"{path}: auths[{key!r}].auth {problem}")


def _entry_credential(path: Path, key: str, entry: object) -> Credential | None:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: auths[{key!r}] must be a JSON object")
    fields: dict[str, str | None] = {}
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        value = entry.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: auths[{key!r}].{name} must be a string")
        fields[name] = value or None
    username, password = fields["username"], fields["password"]
    if fields["auth"]:
        username, password = _decode_auth(path, key, fields["auth"])
    cred = Credential(username, password or None, fields["identitytoken"], fields["registrytoken"])
    return None if cred.is_anonymous else cred


def _by_host(entries: Mapping[str, Any]) -> dict[str, Any]:
    """Index config keys by normalised host; a key spelled exactly as Docker stores it wins over a URL."""
    ranked: dict[str, tuple[int, Any]] = {}
    for key, value in entries.items():
        host = normalize_host(key)
        rank = 0 if key == _server_url(host) else 1
        if host not in ranked or rank < ranked[host][0]:
            ranked[host] = (rank, value)
    return {host: value for host, (_, value) in ranked.items()}


@dataclass(frozen=True)
class DockerConfig:
    """The parts of Docker's config.json that concern credentials, validated."""

    path: Path
    auths: dict[str, Credential] = field(default_factory=dict)
    cred_helpers: dict[str, str] = field(default_factory=dict)
    creds_store: str | None = None


def load_docker_config(path: Path) -> DockerConfig:
    """Read and validate ``path``; a missing file is an empty config. Errors are ConfigErrors naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return DockerConfig(path)
    except OSError as exc:
        raise ConfigError(f"cannot read Docker config {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        return DockerConfig(path)
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # exc.msg and the position carry no file content, so no secret can leak through them.
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")

    auths_doc = doc.get("auths")
    helpers_doc = doc.get("credHelpers")
    auths_doc = {} if auths_doc is None else auths_doc
    helpers_doc = {} if helpers_doc is None else helpers_doc
    store = doc.get("credsStore") or None
    if not isinstance(auths_doc, dict):
        raise ConfigError(f"{path}: 'auths' must be a JSON object")
    if not isinstance(helpers_doc, dict) or not all(isinstance(v, str) for v in helpers_doc.values()):
        raise ConfigError(f"{path}: 'credHelpers' must map registry hosts to helper names")
    if store is not None and not isinstance(store, str):
        raise ConfigError(f"{path}: 'credsStore' must be a string")
    for helper in [*helpers_doc.values(), *([store] if store else [])]:
        if "/" in helper or helper.startswith("."):
            raise ConfigError(f"{path}: invalid credential helper name {helper!r}")

    # Empty entries ({} is what `docker login` leaves behind with a credsStore) must not hide a usable
    # entry spelled differently, so they are dropped before keys are merged.
    entries = {key: _entry_credential(path, key, value) for key, value in auths_doc.items()}
    auths = _by_host({key: cred for key, cred in entries.items() if cred is not None})
    if auths:
        check_permissions(path)
    return DockerConfig(path, auths, _by_host(helpers_doc), store)


def default_docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json`` if DOCKER_CONFIG is set, else ``~/.docker/config.json``."""
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]).expanduser() / "config.json"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


class CredentialStore:
    """Resolves and caches credentials per registry host. Safe to share between concurrent tasks.

    ``overrides`` map a host to a Credential; an all-None Credential forces anonymous access (no lookup
    in the environment or Docker config). ``env`` maps a host to the *names* of its username and password
    environment variables. ``docker_config`` is the config.json path (default: see
    default_docker_config_path); ``use_docker_config=False`` ignores Docker's configuration entirely.
    """

    def __init__(
        self,
        overrides: Mapping[str, Credential] | None = None,
        env: Mapping[str, tuple[str, str]] | None = None,
        *,
        docker_config: Path | None = None,
        use_docker_config: bool = True,
        environ: Mapping[str, str] | None = None,
        helper_timeout: float = HELPER_TIMEOUT,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._overrides = self._index("credentials", overrides or {})
        self._env = self._index("environment credentials", env or {})
        self._config_path = docker_config or default_docker_config_path(self._environ)
        self._use_docker_config = use_docker_config
        self._helper_timeout = helper_timeout
        self._config: DockerConfig | None = None
        self._config_lock = threading.Lock()  # lookups for different hosts run in parallel threads
        self._cache: dict[str, Credential | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned_helpers: set[str] = set()

    @staticmethod
    def _index(what: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in mapping.items():
            host = normalize_host(key)
            if host in result:
                raise ConfigError(f"{what} given twice for registry {host}")
            result[host] = value
        return result

    @property
    def docker_config_path(self) -> Path | None:
        return self._config_path if self._use_docker_config else None

    async def get(self, host: str) -> Credential | None:
        """The credential for ``host`` (any spelling), or None for anonymous access. Cached per host."""
        key = normalize_host(host)
        if key in self._cache:
            return self._cache[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._cache:
                # Config parsing and helpers block (a helper may take seconds), so keep them off the loop.
                self._cache[key] = await asyncio.to_thread(self._resolve, key)
            return self._cache[key]

    def forget(self, host: str) -> None:
        """Drop the cached answer for ``host``, e.g. after a 401, so a helper is asked again (tokens expire)."""
        self._cache.pop(normalize_host(host), None)

    def _resolve(self, host: str) -> Credential | None:
        if host in self._overrides:
            cred: Credential = self._overrides[host]
            return None if cred.is_anonymous and cred.username is None else cred
        if host in self._env:
            user_var, password_var = self._env[host]
            return env_credential(user_var, password_var, self._environ)
        if not self._use_docker_config:
            return None
        with self._config_lock:
            if self._config is None:
                self._config = load_docker_config(self._config_path)
            config = self._config
        # As in Docker, an empty credHelpers entry means "no helper for this host", not "use credsStore".
        helper = config.cred_helpers.get(host, config.creds_store)
        if helper:
            found = self._run_helper(helper, host)
            if found is not None:
                return found
        return config.auths.get(host)

    def _run_helper(self, helper: str, host: str) -> Credential | None:
        """Speak the docker-credential-helpers protocol: server URL on stdin, JSON on stdout."""
        program = f"docker-credential-{helper}"
        executable = shutil.which(program, path=self._environ.get("PATH", os.defpath))
        if executable is None:
            if helper not in self._warned_helpers:
                self._warned_helpers.add(helper)
                log.warning("%s (named in %s) is not on PATH; ignoring it", program, self._config_path)
            return None
        try:
            proc = subprocess.run(
                [executable, "get"],
                input=_server_url(host).encode(),
                capture_output=True,
                timeout=self._helper_timeout,
                env=self._environ,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AuthError(f"{program} did not answer for {host} within {self._helper_timeout:g}s") from None
        except OSError as exc:
            raise AuthError(f"cannot run {program}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            output = (proc.stdout + b"\n" + proc.stderr).decode("utf-8", "replace")
            if _NOT_FOUND in output.lower():
                return None
            detail = next((line.strip() for line in output.splitlines() if line.strip()), "no output")
            raise AuthError(f"{program} failed for {host} (exit status {proc.returncode}): {detail[:200]}")
        return _helper_credential(program, host, proc.stdout)


def _helper_credential(program: str, host: str, stdout: bytes) -> Credential | None:
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise AuthError(f"{program} returned output for {host} that is not JSON") from None
    if not isinstance(doc, dict):
        raise AuthError(f"{program} returned a JSON value for {host} that is not an object")
    username, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(username, str | None) or not isinstance(secret, str | None):
        raise AuthError(f"{program} returned non-string Username or Secret for {host}")
    if not secret:
        return None
    if username == TOKEN_USERNAME:
        return Credential(identity_token=secret)
    return Credential(username=username or None, password=secret)
