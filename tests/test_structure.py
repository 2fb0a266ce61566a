"""The module structure stays as designed: layers import only downwards, no cycles, no private imports.

Layers, thin to thick: errors, reference, oci, store, config → registry, layout → engine → ledger → sync → cli.
Checked on the source text (ast), so a function-local or TYPE_CHECKING import counts like any other; only
cycles are judged on what runs (a TYPE_CHECKING import never executes).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "gcrsync"

RANK = {
    "errors": 0, "secretfiles": 0, "types": 0, "reference": 1, "oci": 2, "store": 3, "config": 4,
    "registry": 5, "layout": 5, "engine": 6, "ledger": 7, "sync": 8, "cli": 9, "__main__": 10,
}
UNIT_ALIASES = {"layout_io": "layout"}  # the layout's file primitives belong to the layout layer


def module_name(path: Path) -> str:
    parts = ["gcrsync", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def unit(module: str) -> str:
    first = module.split(".")[1] if module.count(".") else ""
    return UNIT_ALIASES.get(first, first)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(module: str) -> list[tuple[str, list[str], bool]]:
    """(imported module, names taken from it, runs at run time) for every gcrsync import in `module`."""
    tree = ast.parse(MODULES[module].read_text())
    typing_only = _type_checking_lines(tree)
    out: list[tuple[str, list[str], bool]] = []
    for node in ast.walk(tree):
        runs = getattr(node, "lineno", 0) not in typing_only
        if isinstance(node, ast.Import):
            out += [(a.name, [], runs) for a in node.names if a.name.startswith("gcrsync")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gcrsync"):
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            rest = [n for n in names if f"{node.module}.{n}" not in MODULES]
            out += [(m, [], runs) for m in submodules]
            if rest:
                out.append((node.module, rest, runs))
    return out


def test_every_module_imports_only_lower_layers() -> None:
    wrong = []
    for module in MODULES:
        if module == "gcrsync":
            continue  # the lazy public API re-exports every layer on purpose
        assert unit(module) in RANK, f"{module}: place its layer in RANK"
        for target, _, _ in imports(module):
            if target == "gcrsync" or unit(target) == unit(module):
                continue
            if RANK[unit(target)] >= RANK[unit(module)]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_module_imports_another_modules_private_names() -> None:
    private = [f"{module} imports {name} from {target}"
               for module in MODULES for target, names, _ in imports(module)
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_engine_and_sync_ask_for_capabilities_not_classes() -> None:
    """They work with ImageStore and its capability protocols (gcrsync.store): no isinstance check against
    a concrete store class, no reach through a store into its registry client, and no engine import of the
    client at all (layout.py's check on its own class, for a layout linking from a layout, is not here)."""
    wrong = [f"{module} imports {target}" for module in MODULES if unit(module) == "engine"
             for target, _, _ in imports(module) if target == "gcrsync.registry.client"]
    for module in MODULES:
        if unit(module) not in ("engine", "sync"):
            continue
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                classes = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                wrong += [f"{module}:{node.lineno} isinstance(..., {c})" for c in classes
                          if c in ("Repository", "LayoutRepository")]
            # `self.client` is the Mirror's own client; `dst.client` would be a store's
            if (isinstance(node, ast.Attribute) and node.attr == "client" and isinstance(node.value, ast.Name)
                    and node.value.id != "self"):
                wrong.append(f"{module}:{node.lineno} {node.value.id}.client")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _, runs in imports(m) if runs and t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
