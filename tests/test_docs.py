"""The README's config example and the deploy examples are valid: documentation that cannot rot silently."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from gcrsync.cli import COMMANDS, main
from gcrsync.config import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_example_is_valid() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks, "README has no yaml example"
    config = parse_config(blocks[0], "README.md")
    assert config.sync and config.target and config.metadata.location
    assert config.defaults.tags.immutable


def test_deploy_config_and_manifests_parse() -> None:
    config = parse_config((ROOT / "deploy/gcrsync.yaml").read_text(), "deploy/gcrsync.yaml")
    assert config.sync[0].source == "gcr.io/google-containers"
    for path in (ROOT / "deploy/kubernetes-cronjob.yaml", ROOT / "deploy/github-actions/mirror.yml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_every_command_is_documented_in_readme_with_working_help() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"gcrsync {name}" in readme, name
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name


def test_public_api_is_re_exported_lazily() -> None:
    import subprocess
    import sys

    code = ("import sys, gcrsync; assert 'gcrsync.engine.copy' not in sys.modules; "
            "from gcrsync import copy_image, Mirror, RegistryClient, parse_reference; "
            "[getattr(gcrsync, n) for n in gcrsync.__all__]; print(parse_reference('nginx'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "docker.io/library/nginx"


def test_architecture_doc_names_only_modules_that_exist() -> None:
    """docs/architecture.md points at modules by path; a move or rename must update it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text))
    assert len(paths) > 20
    missing = [p for p in sorted(paths)
               if not (ROOT / "src" / "gcrsync" / p).exists() and not (ROOT / p).exists()]
    assert missing == []
    for layer in ("Resuming", "Redirecting", "Authenticating", "Retrying", "HostLimits", "Counting", "Wire"):
        assert f"`{layer}`" in text and layer in (ROOT / "src/gcrsync/registry/transport.py").read_text()


def test_layer_contracts_name_existing_packages() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    for name in (n.strip() for layer in layers for n in layer.split("|")):
        module = ROOT / "src" / Path(*name.split("."))
        assert module.is_dir() or module.with_suffix(".py").exists(), name


def test_the_safety_options_and_exit_statuses_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    help_text = CliRunner().invoke(main, ["sync", "--help"]).output
    for option in ("--prune", "--max-removed", "--stop-grace", "--trust-ledger", "--image-deadline"):
        assert option in readme and option in help_text, option
    statuses = re.search(r"Exit status: (.*?)\n\n", readme, re.S)
    assert statuses is not None
    for status in ("0 when", "1 if", "2 for", "3 when"):
        assert status in statuses.group(1), status
