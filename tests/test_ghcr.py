"""ghcr.io behaviour end to end, through the ghcr personality (tests/personalities/ghcr.py: a registry
without `_catalog` and the GitHub packages REST API) and the real CLI: discovery with a token (nested
package names sent as %2F, Link pages, org and user owners), without one, and with a bad one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image, push_index

from gcrsync.cli import main
from harness import RegistryServer, skopeo_digest, unique_repo
from personalities.ghcr import GhcrPersonality

TOKEN = "ghp_fixtureToken0123456789"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state"), **extra}


def _sync(tmp_path: Path, gh: GhcrPersonality, namespaces: list[str], dest: str, *, discovery: str = "ghcr",
          env: dict[str, str] | None = None, **registry: str) -> tuple[Any, dict[str, Any]]:
    config = tmp_path / "gcrsync.yaml"
    config.write_text(json.dumps({"version": 1, "registries": {gh.host: {"api": gh.api_url, **registry}}}))
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    result = CliRunner().invoke(main, ["sync", "-c", str(config), *(f"{gh.host}/{ns}" for ns in namespaces),
                                       "--dest", dest, "--discovery", discovery, "--report", str(report)],
                                env=env or _env(tmp_path))
    return result, (json.loads(report.read_text()) if report.exists() else {})


@pytest.fixture
def owners(registry: RegistryServer) -> tuple[str, str, dict[str, str]]:
    """An organization with three packages (one nested) and a user with one; {ref: digest} of each tag."""
    org, user = unique_repo("ghorg"), unique_repo("ghuser")
    layer = make_layer(401, 300)
    pushed = {}
    for tag in ("v1", "v2", "v3"):
        pushed[f"{org}/app:{tag}"], _ = push_image(registry.pusher(), f"{org}/app", tag, layers=[layer],
                                                    labels={"app": tag})
    pushed[f"{org}/tools/cli:1.0"] = push_index(registry.pusher(), f"{org}/tools/cli", "1.0",
                                                [("linux", "amd64", None), ("linux", "arm64", None)], 300, seed=402)
    pushed[f"{org}/base:latest"], _ = push_image(registry.pusher(), f"{org}/base", "latest", layers=[layer],
                                                 labels={"base": "1"})
    pushed[f"{user}/dotfiles:v1"], _ = push_image(registry.pusher(), f"{user}/dotfiles", "v1", layers=[layer],
                                                  labels={"user": "1"})
    return org, user, pushed


@pytest.fixture
def ghcr(registry: RegistryServer, owners: tuple[str, str, dict[str, str]]) -> Iterator[GhcrPersonality]:
    with GhcrPersonality(registry, tokens={TOKEN}, orgs={owners[0]}, max_per_page=2) as gh:
        yield gh


def test_ghcr_discovery_with_a_token(ghcr: GhcrPersonality, owners: tuple[str, str, dict[str, str]],
                                     registry2: RegistryServer, tmp_path: Path) -> None:
    org, user, pushed = owners
    result, report = _sync(tmp_path, ghcr, [org, user], f"{registry2.host}/gh", env=_env(tmp_path, GH_TOKEN=TOKEN),
                           token_env="GH_TOKEN")
    assert result.exit_code == 0, result.output
    copied = {img["source"].split("/", 1)[1]: img for img in report["images"]}
    assert sorted(copied) == sorted(pushed)
    assert {img["state"] for img in copied.values()} == {"copied"}
    # The listing's digests are the versions' names: no manifest request per tag at the source to plan.
    assert all(copied[ref]["source_digest"] == digest for ref, digest in pushed.items())
    assert not [p for m, p in ghcr.registry_seen if m == "HEAD" and "/manifests/" in p]
    assert skopeo_digest(registry2.ref("gh/tools_cli", "1.0")) == pushed[f"{org}/tools/cli:1.0"]
    assert skopeo_digest(registry2.ref("gh/dotfiles", "v1")) == pushed[f"{user}/dotfiles:v1"]
    paths = [p for p, _ in ghcr.api_seen]
    # Every API call carried the token; the nested name went as %2F; Link pages were followed (the package
    # list to GitHub's /organizations/{id}/ form, 3 app versions over 2 pages); the user via /users/.
    assert all(auth == f"Bearer {TOKEN}" for _, auth in ghcr.api_seen)
    assert f"/orgs/{org}/packages/container/tools%2Fcli/versions?per_page=100" in paths
    assert any(p.startswith("/organizations/") and "page=2" in p for p in paths)
    assert any(p.startswith(f"/orgs/{org}/packages/container/app/versions") and "page=2" in p for p in paths)
    assert f"/users/{user}/packages?package_type=container&per_page=100" in paths
    # The registry itself was pulled from with a registry token issued for the same GitHub token.
    assert ghcr.token_logins and set(ghcr.token_logins) == {TOKEN}


def test_ghcr_prefix_namespace_lists_only_that_prefix(ghcr: GhcrPersonality, owners: tuple[str, str, dict[str, str]],
                                                      registry2: RegistryServer, tmp_path: Path) -> None:
    org = owners[0]
    result, report = _sync(tmp_path, ghcr, [f"{org}/tools"], f"{registry2.host}/ghp",
                           env=_env(tmp_path, GH_TOKEN=TOKEN), token_env="GH_TOKEN")
    assert result.exit_code == 0, result.output
    assert [img["source"] for img in report["images"]] == [f"{ghcr.host}/{org}/tools/cli:1.0"]


def test_ghcr_without_a_token_says_what_to_configure(ghcr: GhcrPersonality, owners: tuple[str, str, dict[str, str]],
                                                     registry2: RegistryServer, tmp_path: Path) -> None:
    result, report = _sync(tmp_path, ghcr, [owners[0]], f"{registry2.host}/gh0")
    assert result.exit_code != 0
    error = report["namespaces"][0]["error"]
    assert "needs a GitHub token with read:packages" in error
    assert f"registries: {ghcr.host}: token_env:" in error and f"docker login {ghcr.host}" in error
    assert "\n" not in error
    assert ghcr.api_seen == []  # nothing was asked anonymously
    assert report["images"] == []


def test_ghcr_bad_token_shows_githubs_message(ghcr: GhcrPersonality, owners: tuple[str, str, dict[str, str]],
                                              registry2: RegistryServer, tmp_path: Path) -> None:
    result, report = _sync(tmp_path, ghcr, [owners[0]], f"{registry2.host}/gh1",
                           env=_env(tmp_path, GH_TOKEN="ghp_revoked"), token_env="GH_TOKEN")
    assert result.exit_code != 0
    error = report["namespaces"][0]["error"]
    assert "HTTP 401: Bad credentials" in error and "read:packages" in error


def test_ghcr_has_no_catalog(ghcr: GhcrPersonality, owners: tuple[str, str, dict[str, str]],
                             registry2: RegistryServer, tmp_path: Path) -> None:
    """`discovery: catalog` against ghcr fails the namespace; it is never an empty namespace."""
    result, report = _sync(tmp_path, ghcr, [owners[0]], f"{registry2.host}/ghc", discovery="catalog")
    assert result.exit_code != 0
    error = report["namespaces"][0]["error"]
    assert "_catalog" in error and "NOT_FOUND" in error


def test_readme_examples_for_quay_and_ghcr_are_valid() -> None:
    import re

    from gcrsync.config import parse_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "quay.io/myorg" in b or "ghcr.io/myorg" in b]
    assert len(blocks) == 2
    quay, ghcr = (parse_config(b, "README.md") for b in blocks)
    assert quay.registries["quay.io"].password_env == "QUAY_ROBOT_TOKEN"
    assert ghcr.registries["ghcr.io"].token_env == "GITHUB_TOKEN"
