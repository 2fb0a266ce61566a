"""Structure rules that import-linter cannot express: no module takes another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "gcrsync"


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gcrsync"):
                offenders += [f"{path.relative_to(SRC)}: {node.module}.{alias.name}"
                              for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []


def test_the_engine_and_the_sync_never_downcast_to_a_concrete_store() -> None:
    """They ask for capabilities (gcrsync.store), never whether a store is a registry or a layout."""
    offenders = []
    for package in ("engine", "sync"):
        for path in sorted((SRC / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                    names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                    if names & {"Repository", "LayoutRepository", "BlobUploads"}:
                        offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
