"""The package's import structure (issue 19): no import circles, no import back up a layer.

Every ``import`` / ``from ... import`` statement of every module under ``src/ssmd`` counts —
at module level, inside functions, and under ``if TYPE_CHECKING:`` alike — because a lazy
import only hides a circle from the interpreter, not from the design. An edge goes to the
imported module itself (``from ssmd.a import b`` is ``ssmd.a.b`` when that is a module, else
``ssmd.a``). Implicit edges to parent packages' ``__init__`` are not counted (importing
``ssmd.a.b`` runs ``ssmd/a/__init__.py``); see ``KNOWN_PACKAGE_CIRCLES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Top-level parts of ssmd from the bottom up: a module may import its own part and the parts
# below it, never one above.
LAYERS = (
    "ssmd.config",
    "ssmd.utils",
    "ssmd.structures",
    "ssmd.data",
    "ssmd.evaluation",
    "ssmd.losses",
    "ssmd.models",
    "ssmd.methods",
    "ssmd.engine",
    "ssmd.tasks",
    "ssmd.pretrain",  # pretrains the trunk of a task's model on that task's images
    "ssmd.experiments",
    "ssmd.cli",
)

# Upward imports that exist today and are to be removed, named so that no new one slips in.
KNOWN_UPWARD = {
    # checkpoint I/O is engine machinery, but backbone weights and EMA teachers read it
    ("ssmd.models.backbones.weights", "ssmd.engine.checkpoint"),
    ("ssmd.methods.online_teacher", "ssmd.engine.checkpoint"),
    ("ssmd.methods.ssmd", "ssmd.engine.checkpoint"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((SRC / "ssmd").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The ssmd modules that module ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.append(sub if sub in mods else module)
        found.update(t for t in targets if t in mods and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int:
    if module == "ssmd":  # the package __init__: the version string, below everything
        return -1
    for i, top in enumerate(LAYERS):
        if module == top or module.startswith(top + "."):
            return i
    raise AssertionError(f"{module}: not in any layer of LAYERS; add its part there")


def test_the_cycle_finder_finds_a_hand_made_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_in_src() -> None:
    assert _cycles(_graph()) == []


def test_no_import_goes_up_a_layer() -> None:
    upward = {
        (src, dst) for src, deps in _graph().items() for dst in deps if _layer(dst) > _layer(src)
    }
    assert upward - KNOWN_UPWARD == set()


def test_engine_holds_no_task_code() -> None:
    graph = _graph()
    for name, deps in graph.items():
        if not name.startswith("ssmd.engine"):
            continue
        bad = {d for d in deps if d.startswith(("ssmd.tasks", "ssmd.cli"))}
        assert bad <= {d for s, d in KNOWN_UPWARD if s == name}, (name, bad)
