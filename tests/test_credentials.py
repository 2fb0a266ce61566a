"""Tests for gcrsync.registry.credentials, with real files and a real credential-helper program."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gcrsync.errors import AuthError, ConfigError
from gcrsync.registry.credentials import (
    Credential,
    CredentialStore,
    check_permissions,
    default_docker_config_path,
    env_credential,
    load_docker_config,
    normalize_host,
)

SECRET = "s3cr3t-Pa55"
TOKEN = "refresh-token-XYZ"

HELPER_SOURCE = """\
#!{python}
# A docker-credential-helpers implementation backed by store.json next to this script.
import json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
server = sys.stdin.read()
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), sys.argv[1:], server]) + "\\n")
with open(os.path.join(here, "store.json")) as f:
    store = json.load(f)
entry = store.get(server)
if entry is None:
    print("credentials not found in native keychain")
    sys.exit(1)
if "exit" in entry:
    sys.stderr.write(entry["message"] + "\\n")
    sys.exit(entry["exit"])
if "raw" in entry:
    sys.stdout.write(entry["raw"])
    sys.exit(0)
json.dump({{"ServerURL": server, "Username": entry["Username"], "Secret": entry["Secret"]}}, sys.stdout)
"""


@dataclass
class FakeHelpers:
    """docker-credential-test and docker-credential-other, on PATH, sharing one store.json."""

    bin_dir: Path

    def set(self, store: dict[str, Any]) -> None:
        (self.bin_dir / "store.json").write_text(json.dumps(store))

    def calls(self) -> list[tuple[str, list[str], str]]:
        log = self.bin_dir / "calls.log"
        if not log.exists():
            return []
        return [(name, args, server) for name, args, server in map(json.loads, log.read_text().splitlines())]


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHelpers:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("test", "other"):
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(HELPER_SOURCE.format(python=sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    fake = FakeHelpers(bin_dir)
    fake.set({})
    return fake


def write_config(tmp_path: Path, doc: Any, mode: int = 0o600) -> Path:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    path.chmod(mode)
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- Credential ---------------------------------------------------------------------------------------


def test_credential_repr_redacts_secrets() -> None:
    cred = Credential("alice", SECRET, TOKEN, "bearer-ABC")
    for text in (repr(cred), str(cred), f"{cred}", repr([cred]), repr({"c": cred})):
        assert SECRET not in text
        assert TOKEN not in text
        assert "bearer-ABC" not in text
        assert "alice" in text
        assert "<redacted>" in text
    assert repr(Credential()) == ("Credential(username=None, password=None, identity_token=None, registry_token=None)")
    assert Credential("alice", SECRET) == Credential("alice", SECRET)
    assert Credential().is_anonymous
    assert Credential(username="alice").is_anonymous
    assert not Credential(registry_token="x").is_anonymous


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("Docker.IO", "docker.io"),
        ("HTTPS://GCR.io/v2/", "gcr.io"),
        ("http://localhost:5000/path", "localhost:5000"),
        ("localhost:5000", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


# --- overrides and environment ------------------------------------------------------------------------


async def test_override_beats_environment_and_docker_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"gcr.io": {"auth": b64("file:filepw")}}})
    store = CredentialStore(
        {"GCR.IO": Credential("cli", SECRET)},
        {"gcr.io": ("U", "P")},
        docker_config=config,
        environ={"U": "envuser", "P": "envpw"},
    )
    assert await store.get("gcr.io") == Credential("cli", SECRET)


async def test_environment_beats_docker_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"ghcr.io": {"auth": b64("file:filepw")}}})
    store = CredentialStore(
        env={"ghcr.io": ("GH_USER", "GH_TOKEN")},
        docker_config=config,
        environ={"GH_USER": "octocat", "GH_TOKEN": SECRET},
    )
    assert await store.get("ghcr.io") == Credential("octocat", SECRET)
    assert await store.get("quay.io") is None


async def test_empty_override_forces_anonymous(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"gcr.io": {"auth": b64("file:filepw")}}})
    store = CredentialStore({"gcr.io": Credential()}, docker_config=config)
    assert await store.get("gcr.io") is None


def test_env_credential() -> None:
    assert env_credential("U", "P", {"U": "bob", "P": SECRET}) == Credential("bob", SECRET)
    with pytest.raises(ConfigError, match="environment variable P \\(registry password\\)"):
        env_credential("U", "P", {"U": "bob"})
    with pytest.raises(ConfigError, match="environment variable U"):
        env_credential("U", "P", {"U": "", "P": SECRET})


async def test_missing_environment_variable_is_config_error_without_values(tmp_path: Path) -> None:
    store = CredentialStore(env={"ghcr.io": ("GH_USER", "GH_TOKEN")}, environ={"GH_TOKEN": SECRET})
    with pytest.raises(ConfigError) as info:
        await store.get("ghcr.io")
    assert "GH_USER" in str(info.value)
    assert SECRET not in str(info.value)


def test_duplicate_hosts_after_normalisation_are_rejected() -> None:
    with pytest.raises(ConfigError, match=re.escape("given twice for registry docker.io")):
        CredentialStore({"docker.io": Credential("a", "b"), "index.docker.io": Credential("c", "d")})


# --- config.json auths --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io"])
@pytest.mark.parametrize("asked", ["docker.io", "index.docker.io", "registry-1.docker.io"])
async def test_docker_hub_keys_match_any_hub_alias(tmp_path: Path, key: str, asked: str) -> None:
    config = write_config(tmp_path, {"auths": {key: {"auth": b64(f"hubuser:{SECRET}")}}})
    store = CredentialStore(docker_config=config, environ={})
    assert await store.get(asked) == Credential("hubuser", SECRET)


async def test_auths_entry_forms(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "localhost:5000": {"auth": b64("local:pw:with:colons")},
                "https://myreg.example.com/v2/": {"username": "u", "password": SECRET},
                "idtok.example.com": {"username": "u", "identitytoken": TOKEN},
                "regtok.example.com": {"registrytoken": "bearer-ABC"},
                "padless.example.com": {"auth": b64("p:q").rstrip("=")},
                "empty.example.com": {},
                "emailonly.example.com": {"email": "x@example.com"},
            }
        },
    )
    store = CredentialStore(docker_config=config, environ={})
    assert await store.get("localhost:5000") == Credential("local", "pw:with:colons")
    assert await store.get("myreg.example.com") == Credential("u", SECRET)
    assert await store.get("idtok.example.com") == Credential("u", identity_token=TOKEN)
    assert await store.get("regtok.example.com") == Credential(registry_token="bearer-ABC")
    assert await store.get("padless.example.com") == Credential("p", "q")
    assert await store.get("empty.example.com") is None
    assert await store.get("emailonly.example.com") is None
    assert await store.get("localhost:5001") is None


async def test_exact_key_beats_url_key_and_empty_entries_do_not_hide(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "https://gcr.io/": {"auth": b64("url:pw1")},
                "gcr.io": {"auth": b64("exact:pw2")},
                "https://index.docker.io/v1/": {},
                "docker.io": {"auth": b64("hub:pw3")},
            }
        },
    )
    store = CredentialStore(docker_config=config, environ={})
    assert await store.get("gcr.io") == Credential("exact", "pw2")
    assert await store.get("docker.io") == Credential("hub", "pw3")


async def test_missing_config_file_means_anonymous(tmp_path: Path) -> None:
    store = CredentialStore(docker_config=tmp_path / "nope" / "config.json", environ={})
    assert await store.get("gcr.io") is None


async def test_use_docker_config_false_ignores_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"gcr.io": {"auth": b64("a:b")}}})
    store = CredentialStore(docker_config=config, use_docker_config=False)
    assert store.docker_config_path is None
    assert await store.get("gcr.io") is None


async def test_docker_config_env_var_selects_directory(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {"gcr.io": {"auth": b64("dc:pw")}}})
    environ = {"DOCKER_CONFIG": str(config.parent), "HOME": str(tmp_path / "home")}
    assert default_docker_config_path(environ) == config
    assert default_docker_config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")
    store = CredentialStore(environ=environ)
    assert store.docker_config_path == config
    assert await store.get("gcr.io") == Credential("dc", "pw")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"auths": {', "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"auths": []}', "'auths' must be a JSON object"),
        ('{"auths": {"gcr.io": "x"}}', "auths['gcr.io'] must be a JSON object"),
        ('{"auths": {"gcr.io": {"auth": 5}}}', "auths['gcr.io'].auth must be a string"),
        ('{"auths": {"gcr.io": {"auth": "!!!notbase64"}}}', "is not valid base64"),
        (json.dumps({"auths": {"gcr.io": {"auth": b64("nocolon")}}}), "does not decode to user:password"),
        ('{"credHelpers": {"gcr.io": 1}}', "'credHelpers' must map"),
        ('{"credHelpers": {"gcr.io": "../evil"}}', "invalid credential helper name"),
        ('{"credsStore": ["x"]}', "'credsStore' must be a string"),
    ],
)
async def test_malformed_config_is_config_error_naming_file(tmp_path: Path, content: str, fragment: str) -> None:
    config = write_config(tmp_path, content)
    store = CredentialStore(docker_config=config, environ={})
    with pytest.raises(ConfigError) as info:
        await store.get("gcr.io")
    assert str(config) in str(info.value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_config_error_does_not_echo_secrets(tmp_path: Path) -> None:
    config = write_config(tmp_path, '{"auths": {"gcr.io": {"password": "' + SECRET + '", }}}')
    with pytest.raises(ConfigError) as info:
        load_docker_config(config)
    assert SECRET not in str(info.value)


def test_unreadable_or_empty_config(tmp_path: Path) -> None:
    directory = tmp_path / "config.json"
    directory.mkdir()
    with pytest.raises(ConfigError, match="cannot read Docker config"):
        load_docker_config(directory)
    empty = write_config(tmp_path, "  \n")
    assert load_docker_config(empty).auths == {}


# --- permissions --------------------------------------------------------------------------------------


def test_check_permissions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("x")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        assert check_permissions(path) is False
        assert caplog.records == []
        path.chmod(0o644)
        assert check_permissions(path) is True
    assert "readable by all users" in caplog.text
    assert str(path) in caplog.text
    assert check_permissions(tmp_path / "missing") is False


async def test_world_readable_config_with_credentials_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, {"auths": {"gcr.io": {"auth": b64(f"u:{SECRET}")}}}, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        assert await CredentialStore(docker_config=config, environ={}).get("gcr.io") == Credential("u", SECRET)
    assert "chmod 600" in caplog.text
    assert SECRET not in caplog.text


def test_world_readable_config_without_credentials_is_fine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "x"}, 0o644)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        load_docker_config(config)
    assert caplog.records == []


# --- credential helpers -------------------------------------------------------------------------------


async def test_cred_helper_gets_server_url_on_stdin(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set({"gcr.io": {"Username": "_json_key", "Secret": SECRET}})
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "test"}})
    store = CredentialStore(docker_config=config)
    assert await store.get("GCR.io") == Credential("_json_key", SECRET)
    assert helpers.calls() == [("docker-credential-test", ["get"], "gcr.io")]


async def test_token_username_means_identity_token(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set({"myacr.azurecr.io": {"Username": "<token>", "Secret": TOKEN}})
    config = write_config(tmp_path, {"credHelpers": {"myacr.azurecr.io": "test"}})
    cred = await CredentialStore(docker_config=config).get("myacr.azurecr.io")
    assert cred == Credential(identity_token=TOKEN)


async def test_creds_store_is_default_helper(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set(
        {
            "https://index.docker.io/v1/": {"Username": "hub", "Secret": SECRET},
            "quay.io": {"Username": "q", "Secret": "qpw"},
            "gcr.io": {"Username": "wrong", "Secret": "wrong"},
        }
    )
    config = write_config(tmp_path, {"credsStore": "test", "credHelpers": {"gcr.io": "other", "ghcr.io": ""}})
    store = CredentialStore(docker_config=config)
    assert await store.get("registry-1.docker.io") == Credential("hub", SECRET)
    assert await store.get("quay.io") == Credential("q", "qpw")
    # credHelpers wins over credsStore; "other" is asked with the same store, so it finds the entry too
    assert await store.get("gcr.io") == Credential("wrong", "wrong")
    # an empty credHelpers entry disables helpers for that host
    assert await store.get("ghcr.io") is None
    assert [(name, server) for name, _, server in helpers.calls()] == [
        ("docker-credential-test", "https://index.docker.io/v1/"),
        ("docker-credential-test", "quay.io"),
        ("docker-credential-other", "gcr.io"),
    ]


async def test_helper_not_found_means_anonymous_or_auths(tmp_path: Path, helpers: FakeHelpers) -> None:
    config = write_config(
        tmp_path, {"credsStore": "test", "auths": {"fallback.io": {"auth": b64("fb:pw")}, "docker.io": {}}}
    )
    store = CredentialStore(docker_config=config)
    assert await store.get("docker.io") is None
    assert await store.get("fallback.io") == Credential("fb", "pw")
    assert len(helpers.calls()) == 2


async def test_helper_empty_secret_means_anonymous(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set({"gcr.io": {"Username": "", "Secret": ""}})
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "test"}})
    assert await CredentialStore(docker_config=config).get("gcr.io") is None


async def test_helper_error_exit_is_auth_error(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set({"gcr.io": {"exit": 3, "message": "keychain is locked"}})
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "test"}})
    store = CredentialStore(docker_config=config)
    with pytest.raises(AuthError) as info:
        await store.get("gcr.io")
    message = str(info.value)
    assert "docker-credential-test" in message
    assert "gcr.io" in message
    assert "exit status 3" in message
    assert "keychain is locked" in message
    # errors are not cached: the helper is asked again next time
    with pytest.raises(AuthError):
        await store.get("gcr.io")
    assert len(helpers.calls()) == 2


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("this is not json " + SECRET, "not JSON"),
        ("[1]", "not an object"),
        ('{"Username": 1, "Secret": "' + SECRET + '"}', "non-string"),
    ],
)
async def test_helper_bad_output_is_auth_error(tmp_path: Path, helpers: FakeHelpers, raw: str, fragment: str) -> None:
    helpers.set({"gcr.io": {"raw": raw}})
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "test"}})
    with pytest.raises(AuthError) as info:
        await CredentialStore(docker_config=config).get("gcr.io")
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


async def test_missing_helper_warns_once_and_falls_back(
    tmp_path: Path, helpers: FakeHelpers, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, {"credsStore": "desktop", "auths": {"gcr.io": {"auth": b64("g:pw")}}})
    store = CredentialStore(docker_config=config)
    with caplog.at_level(logging.WARNING, logger="gcrsync"):
        assert await store.get("quay.io") is None
        assert await store.get("ghcr.io") is None
        assert await store.get("gcr.io") == Credential("g", "pw")
    warnings = [r for r in caplog.records if "docker-credential-desktop" in r.getMessage()]
    assert len(warnings) == 1
    assert "not on PATH" in warnings[0].getMessage()


async def test_helper_timeout_is_auth_error(tmp_path: Path, helpers: FakeHelpers) -> None:
    # This helper blocks forever opening a FIFO nobody writes to, so only the timeout can end the call.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = helpers.bin_dir / "docker-credential-hang"
    script.write_text(f"#!{sys.executable}\nopen({str(fifo)!r}).read()\n")
    script.chmod(0o755)
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "hang"}})
    store = CredentialStore(docker_config=config, helper_timeout=0.5)
    with pytest.raises(AuthError, match=re.escape("did not answer for gcr.io within 0.5s")):
        await store.get("gcr.io")


async def test_lookups_are_cached_per_host_and_forget_refreshes(tmp_path: Path, helpers: FakeHelpers) -> None:
    helpers.set({"gcr.io": {"Username": "u", "Secret": "one"}})
    config = write_config(tmp_path, {"credHelpers": {"gcr.io": "test"}})
    store = CredentialStore(docker_config=config)
    results = await asyncio.gather(*(store.get(h) for h in ["gcr.io", "GCR.IO", "https://gcr.io/v2/"] * 3))
    assert set(results) == {Credential("u", "one")}
    assert len(helpers.calls()) == 1
    helpers.set({"gcr.io": {"Username": "u", "Secret": "two"}})
    assert await store.get("gcr.io") == Credential("u", "one")
    store.forget("gcr.io")
    assert await store.get("gcr.io") == Credential("u", "two")
    assert len(helpers.calls()) == 2


async def test_secrets_never_logged(tmp_path: Path, helpers: FakeHelpers, caplog: pytest.LogCaptureFixture) -> None:
    helpers.set({"gcr.io": {"Username": "u", "Secret": SECRET}})
    config = write_config(
        tmp_path, {"credHelpers": {"gcr.io": "test"}, "auths": {"x.io": {"auth": b64(f"x:{SECRET}")}}}, 0o644
    )
    with caplog.at_level(logging.DEBUG):
        store = CredentialStore(docker_config=config)
        assert (await store.get("gcr.io")) is not None
        assert (await store.get("x.io")) is not None
    assert SECRET not in caplog.text
    assert b64(f"x:{SECRET}") not in caplog.text
