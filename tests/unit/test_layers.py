"""rsdlib's imports run down only: a layer imports its own layer and the ones below, never one above.

The order is written once, in LAYERS. Every import is checked, at module level and inside
functions (an import inside a function is how an upward arrow hides), by walking the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rsdlib

ROOT = Path(rsdlib.__file__).parent

#: Lowest first. A module is in the layer of the longest prefix listed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the foundation: facts and utilities every layer may use
    (
        "paths",
        "seeding",
        "results",
        "plotting",
        "progress",
        "tables",
        "actions",
        "observations",
        "metrics",
        "half_weights",
        "pipeline",
    ),
    ("tokenizers",),
    ("policies",),
    ("train",),
    ("decoding",),
    ("libero",),
    ("widgets",),
    ("experiments",),
)


def layer_of(module: str) -> int:
    """The layer index of ``rsdlib.<a>.<b>...`` (``rsdlib`` itself is the foundation)."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__init__"]:
        return 0
    for i, names in enumerate(LAYERS):
        if parts[0] in names:
            return i
    raise AssertionError(f"rsdlib.{parts[0]} is in no layer: add it to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every rsdlib import in a file, wherever it is written."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rsdlib"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.split(".")[0] == "rsdlib":
                # `from rsdlib import paper` names a module through its package
                out += [(node.lineno, f"{name}.{a.name}" if name == "rsdlib" else name) for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            out.append((node.lineno, "__import__"))  # hides where an arrow points
    return out


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in SOURCES:
        layer_of(module_name(path) if path.name != "__init__.py" else module_name(path) + ".__init__")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_only(path):
    here = module_name(path)
    mine = layer_of(here if path.name != "__init__.py" else here + ".__init__")
    upward = []
    for line, target in imported_modules(path):
        if target == "__import__":
            upward.append(f"line {line}: __import__ (import the module by name instead)")
        elif layer_of(target) > mine:
            upward.append(f"line {line}: {target} ({LAYERS[layer_of(target)][0]} is above {LAYERS[mine][0]})")
    assert not upward, f"{here} imports a layer above its own:\n  " + "\n  ".join(upward)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """A test that can fail: an upward import hidden in a function is found."""
    file = ROOT / "policies" / "__layers_probe__.py"
    file.write_text("def f():\n    from rsdlib.libero.evaluate import evaluate\n    return evaluate\n")
    try:
        found = imported_modules(file)
    finally:
        file.unlink()
    assert found == [(2, "rsdlib.libero.evaluate")]
    assert layer_of("rsdlib.libero.evaluate") > layer_of("rsdlib.policies.heads")


def _module_level_graph() -> dict[str, set[str]]:
    """Module -> the rsdlib modules it imports, counting every import in the file (a cycle through
    a function-level import is still a cycle a reader has to untangle)."""
    modules = {module_name(p): p for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, target in imported_modules(path):
            while target and target not in modules:  # `from rsdlib.x import name`: the module x
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def test_no_module_imports_itself_back_through_others():
    graph = _module_level_graph()
    packages = {m for m in graph if (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    # a package's __init__ re-exports its modules: an edge into a package stands for its modules
    graph = {m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)
