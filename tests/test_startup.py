"""Start-up: what the commands import. The figures are in bench/ (bench/importtime.py); this checks the
claims they rest on: `gcrsync copy` without `-c` imports neither pydantic nor PyYAML, nor discovery or the
planner, and no command off a terminal imports rich unless it prints a table (docs/architecture.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.imagefactory import make_layer, push_image

from gcrsync.cli.settings import DEFAULT_TIMEOUT
from gcrsync.config import Defaults
from harness import RegistryServer, unique_repo

HEAVY = ("pydantic", "yaml", "rich", "gcrsync.ledger", "gcrsync.config", "gcrsync.engine.plan",
         "gcrsync.registry.discovery")
PROBE = f"""
import json, sys
from gcrsync.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def run_cli(tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)  # fmt: skip
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["code"], doc["loaded"], proc.stdout + proc.stderr


def test_copy_without_a_config_imports_no_pydantic_yaml_rich_or_ledger(registry: RegistryServer,
                                                                       tmp_path: Path) -> None:
    repo = unique_repo("startup")
    push_image(registry.pusher(), repo, "v1", layers=[make_layer(61, 300)])
    code, loaded, out = run_cli(tmp_path, "copy", f"{registry.host}/{repo}:v1", f"{registry.host}/{repo}-c:v1")
    assert code in (0, None), out
    assert "copied" in out, out
    assert loaded == [], out
    config = tmp_path / "c.yaml"
    config.write_text("defaults:\n  timeout: 5\n")
    code, loaded, out = run_cli(tmp_path, "copy", "-c", str(config), f"{registry.host}/{repo}:v1",
                                f"{registry.host}/{repo}-c:v1")
    assert code in (0, None), out
    assert loaded == ["gcrsync.config", "pydantic", "yaml"], out  # a config file is read and validated


def test_a_sync_no_op_off_a_terminal_imports_no_rich_or_yaml(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("startup-ns")
    push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(62, 300)])
    args = ("sync", f"{registry.host}/{ns}", "--dest", f"{registry.host}/{ns}-m")
    code, loaded, out = run_cli(tmp_path, *args)
    assert code in (0, None), out
    assert "rich" in loaded, out  # the first run copied: its table is printed with rich
    code, loaded, out = run_cli(tmp_path, *args)
    assert code in (0, None) and "1 unchanged" in out, out
    assert loaded == ["gcrsync.config", "gcrsync.engine.plan", "gcrsync.ledger", "gcrsync.registry.discovery",
                      "pydantic"], out


def test_the_command_lines_default_timeout_is_the_configs() -> None:
    assert Defaults().timeout == DEFAULT_TIMEOUT


def test_the_heap_is_frozen_before_the_interpreter_shuts_down() -> None:
    # Registered before the command line runs, so it runs after gcrsync's own exit handler (newest first):
    # by then the interpreter's final garbage collections have nothing left to walk (bench/README.md).
    probe = ("import atexit, gc\n"
             "atexit.register(lambda: print('frozen objects:', gc.get_freeze_count()))\n"
             "from gcrsync.cli import main\n"
             "main(['catalog', '--help'])\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    frozen = int(proc.stdout.rsplit("frozen objects:", 1)[1])
    assert frozen > 10_000, proc.stdout
