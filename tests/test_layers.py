"""The package's import graph, read from the source with ``ast`` (every import, in functions too; not those under
``if TYPE_CHECKING:``, which never run): the model and
the data know nothing of training (no arrow from ``model/`` or ``data/`` into ``engine/``), the ground floor
(``weights.py`` beside ``io.py``) imports nothing above it, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "yolofuse_scale"
#: Modules that import no other module of the package but each other: what everything may stand on.
GROUND = ("errors", "io", "torch_load", "_offline", "weights")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The package's modules ``path`` names in an import statement, wherever it stands: for ``from X import Y``
    the module X.Y when Y is one, else X."""
    found = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    # ``if TYPE_CHECKING:`` imports never run: they name types for annotations, not a dependency
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_model_and_data_never_import_the_engine():
    """The model knows nothing of training, the data nothing of the loop: the weights reader they need lives on the
    ground floor (yolofuse_scale/weights.py), not in engine/checkpoint/."""
    arrows = sorted(f"{src} -> {dst}" for src, targets in GRAPH.items() for dst in targets
                    if src.startswith(("yolofuse_scale.model", "yolofuse_scale.data"))
                    and dst.startswith("yolofuse_scale.engine"))
    assert arrows == [], arrows


def test_the_ground_floor_imports_nothing_above_it():
    ground = {f"yolofuse_scale.{m}" for m in GROUND}
    arrows = sorted(f"{src} -> {dst}" for src in ground for dst in GRAPH[src] if dst not in ground)
    assert arrows == [], arrows


def test_no_modules_import_each_other_in_a_circle():
    """Strongly connected sets of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert circles == [], circles
