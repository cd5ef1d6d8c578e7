"""No import circles among the project's modules, counting imports under TYPE_CHECKING.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import``
and ``from ... import`` anywhere in a module (top level, ``if TYPE_CHECKING:`` blocks,
inside functions) is an edge to the module it names. A circle of TYPE_CHECKING imports is
still a circle: it means a callee asked for a whole object where a narrow interface would
do.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ble_bridge", "gatt", "hardware")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (explicitly)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # `import a.b.c` names a.b.c; a name inside a module points at the module
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_checker_sees_type_checking_circles() -> None:
    src = {
        "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from b import B\n",
        "b": "import a\n",
    }
    graph: dict[str, set[str]] = {"a": set(), "b": set()}
    for name, text in src.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                graph[name].add(node.module)
    assert cycles(graph) == [["a", "b"]]


def test_the_graph_reads_every_kind_of_import() -> None:
    graph = import_graph()
    assert "ble_bridge.transport" in graph["ble_bridge.mesh.service"]  # relative
    assert "gatt.transport" in graph["ble_bridge.node"]  # inside a function
    assert "ble_bridge.wire.identity" in graph["ble_bridge.wire.packet"]  # under TYPE_CHECKING
    assert "ble_bridge.mesh.links" in graph["ble_bridge.air.air"]  # two dots


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


# what each layer may import from the project (besides itself)
LAYERS = {
    "ble_bridge.wire": set(),
    "ble_bridge.air": {
        "ble_bridge.transport",
        "ble_bridge.wire",
        "ble_bridge.mesh.links",
        "ble_bridge.uplink.config",
        "ble_bridge.uplink.core",
    },
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_imports_point_down(layer: str) -> None:
    allowed = LAYERS[layer]
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m == layer or m.startswith(layer + ".")
        for t in targets
        if not (t == layer or t.startswith(layer + "."))
        and not any(t == a or t.startswith(a + ".") for a in allowed)
    )
    assert bad == []
