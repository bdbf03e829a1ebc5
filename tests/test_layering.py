"""The dependency order of the package, enforced: errors/registry/files -> modules/text/models/world ->
results (edit, adapters) -> methods -> evaluation -> export -> cli; no import cycle; methods never import the
built-in world (they ask the pipeline's profile, erasure.profiles). Read from the source with ast, so lazy
imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).parents[1] / "erasure"
LAYERS = {
    0: ("errors", "registry", "versions", "offline", "files", "precision", "distributed", "profiles", "data"),
    1: ("modules", "text", "embeddings", "models", "generation", "world"),
    2: ("edit", "adapters", "results", "training"),
    3: ("methods",),
    4: ("evaluation",),
    5: ("export", "experiments", "reference", "attacks", "benchmark"),
    6: ("cli", "__main__"),
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("erasure"):
                found.add(resolve(node.module))
                found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("erasure")}
        edges[name] = found - {name, "erasure"}  # the package facade imports everything lazily
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYER_OF.get(top, 6)


def test_every_module_has_a_layer():
    tops = {m.split(".")[1] for m in _modules() if "." in m}
    assert tops <= set(LAYER_OF), sorted(tops - set(LAYER_OF))


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} -> {b}" for a, bs in _graph().items() for b in bs if _layer(b) > _layer(a)]
    assert not upward, upward


def test_methods_never_import_the_world():
    found = [f"{a} -> {b}" for a, bs in _graph().items() if a.startswith("erasure.methods")
             for b in bs if b.startswith("erasure.world")]
    assert not found, found


def test_no_import_cycle():
    edges = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path
                            else f"import cycle through {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_no_script_imports_another_script():
    """Scripts are thin drivers over the package: what two of them share lives in erasure (experiments, reference)."""
    scripts = Path(__file__).parents[1] / "scripts"
    stems = {p.stem for p in scripts.glob("*.py")}
    found = []
    for path in sorted(scripts.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name} imports {n}" for n in names if n in stems]
    assert not found, found
