"""Start-up cost of each gcrsync command: what `python -X importtime` says the imports take.

Usage: ``python bench/importtime.py [--runs 7] [--json]``. For each command, the process imports
`gcrsync.cli`, resolves the command (the lazy group imports its module) and stops before running it; the
figure is the sum of the top-level imports' cumulative times, the minimum over ``--runs`` runs (the least
disturbed by other work on the machine). Also lists the heaviest top-level packages of the last run, and
which heavy third-party packages (aiohttp, pydantic, yaml, rich) were imported at all. Informational only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = ["copy", "sync", "list", "compare", "monitor", "catalog"]
HEAVY = ["aiohttp", "pydantic", "yaml", "rich", "click"]
# Import the CLI, resolve the command as click would, and stop: the figure is start-up, not the run.
PROBE = """
import sys
import click
from gcrsync.cli import main
ctx = click.Context(main)
main.get_command(ctx, sys.argv[1])
"""
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)")


# The floor: what any networked command pays before gcrsync's own modules (and pydantic, which the ledger
# models need, for every command that reads a ledger). aiohttp is imported as gcrsync imports it (without
# loading the CA bundle for its unused default TLS contexts, gcrsync.registry.tls); the plain import is shown too.
_AIOHTTP = "from gcrsync.registry.tls import import_aiohttp; import_aiohttp(); import click"
FLOORS = {"floor: aiohttp + click": _AIOHTTP,
          "floor: aiohttp + click + pydantic": _AIOHTTP + "; import pydantic; from pydantic import BaseModel",
          "plain `import aiohttp, click`": "import aiohttp, click"}


def measure(command: str, env: dict[str, str]) -> tuple[float, dict[str, float], set[str]]:
    """(seconds of imports, {top-level module: seconds}, every module imported) for one process."""
    code = ["-c", FLOORS[command]] if command in FLOORS else ["-c", PROBE, command]
    proc = subprocess.run([sys.executable, "-X", "importtime", *code], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    top: dict[str, float] = {}
    seen: set[str] = set()
    for line in proc.stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        seen.add(m.group(4))
        if len(m.group(3)) == 1:  # top level: one space of indentation
            top[m.group(4)] = top.get(m.group(4), 0.0) + int(m.group(2)) / 1e6
    return sum(top.values()), top, seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("commands", nargs="*", default=COMMANDS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gcrsync-importtime-") as tmp:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-c", PROBE, "copy"], env=env, check=True)  # fill the bytecode cache
        for command in args.commands:
            subprocess.run([sys.executable, "-c", PROBE, command], env=env, check=True)
        results = {}
        for command in [*args.commands, *FLOORS]:
            runs = [measure(command, env) for _ in range(args.runs)]
            best, top, seen = min(runs, key=lambda r: r[0])
            heavy = [name for name in HEAVY if name in seen]
            results[command] = {"seconds": round(best, 4), "heavy": heavy,
                                "top": {k: round(v, 4) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:6]}}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for command, r in results.items():
        tops = ", ".join(f"{k} {v * 1000:.0f}" for k, v in r["top"].items())
        name = command if command in FLOORS else f"gcrsync {command}"
        print(f"{name:<34} {r['seconds'] * 1000:6.1f} ms of imports   third-party: "
              f"{' '.join(r['heavy']) or '-'}   (ms: {tops})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
