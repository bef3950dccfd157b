"""Who may import whom (docs/architecture.md), read from the code: every import, at any depth.

Parses every module of ``labsuite/`` and ``drivers/`` (installed as ``labsuite.drivers``) with
``ast``, imports inside functions and under ``TYPE_CHECKING`` included, and fails on any import
cycle and on any import that crosses a layer rule. Nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"labsuite": REPO / "labsuite", "labsuite.drivers": REPO / "drivers"}

QT = ("PyQt5", "pyqtgraph")

# (importer prefix, imported prefixes it must never reach, why)
RULES = (
    ("labsuite.protocol", ("labsuite.feedback", "labsuite.archive", "labsuite.lab"),
     "the session layer is headless and file-free: the composition root (labsuite.lab) wires it"),
    ("labsuite.drivers", ("labsuite.realtime", "labsuite.lab", "labsuite.protocol"),
     "drivers know nothing of processing or sessions"),
    ("labsuite.realtime", (*QT, "pylsl", "h5py", "labsuite.streams.acquisition", "labsuite.lab"),
     "realtime/ is kernels and plain objects: no Qt, no LSL, no HDF5"),
    ("labsuite.streams", (*QT, "h5py", "labsuite.realtime", "labsuite.protocol", "labsuite.archive"),
     "acquisition moves samples; it neither processes, runs sessions nor writes files"),
    ("labsuite.lab", ("labsuite.feedback", *QT),
     "the composition root is headless: the CLI hands the GUI role in"),
)
# Qt only in the GUI's own modules (headless runs never import it)
QT_ALLOWED = ("labsuite.feedback.windows", "labsuite.feedback.app")


def _module_name(path: Path) -> str:
    for prefix, root in sorted(ROOTS.items(), key=lambda kv: -len(kv[0])):
        if root in path.parents or path.parent == root:
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([prefix, *parts])
    raise AssertionError(path)


def _modules() -> dict[str, Path]:
    out = {}
    for root in ROOTS.values():
        for path in root.rglob("*.py"):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from a import b`` is ``a.b`` if a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    out.add(f"{target}.{alias.name}")
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    edges = {n: sorted(t for t in ts if t in graph) for n, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            if len(comp) > 1 or v in edges[v]:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_parser_sees_every_kind_of_import():
    """The checks below can fail: a deliberately bad module is caught by each of them."""
    graph = {
        "labsuite.protocol.bad": {"labsuite.feedback.feed", "labsuite.x"},
        "labsuite.x": {"labsuite.protocol.bad"},
        "labsuite.realtime.bad": {"pylsl"},
    }
    assert _cycles(graph) == [["labsuite.protocol.bad", "labsuite.x"]]
    assert _violations(graph) == [
        ("labsuite.protocol.bad", "labsuite.feedback.feed", RULES[0][2]),
        ("labsuite.realtime.bad", "pylsl", RULES[2][2]),
    ]
    # imports inside functions, relative imports and TYPE_CHECKING blocks are all read
    assert "labsuite.drivers.registry" in GRAPH["labsuite.labconfig"] or \
        "labsuite.drivers.registry" not in MODULES
    assert "labsuite.drivers.base" in GRAPH["labsuite.drivers.sim.lab"]
    assert len(MODULES) > 60


def _violations(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    out = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            for importer, banned, why in RULES:
                if _within(name, importer) and any(_within(target, b) for b in banned):
                    out.append((name, target, why))
            if any(_within(target, q) for q in QT) and name not in QT_ALLOWED:
                out.append((name, target, "Qt only in labsuite.feedback.windows/app"))
    return out


def test_no_import_cycles_not_even_through_imports_inside_functions():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("importer", [r[0] for r in RULES])
def test_layer_rules(importer):
    bad = [v for v in _violations(GRAPH) if _within(v[0], importer) or v[2].startswith("Qt only")]
    assert not bad, "\n".join(f"{a} imports {b}: {why}" for a, b, why in bad)


def _literals(path: Path) -> list[object]:
    """The constants a module's code uses (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
                  and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings]


def test_one_home_for_gravity_and_the_session_stream_ids():
    homes = {"gravity": set(), "session source_id": set(), "participant rule": set()}
    for name, path in MODULES.items():
        for value in _literals(path):
            if isinstance(value, float) and value == 9.80665:
                homes["gravity"].add(name)
            if isinstance(value, str) and value.startswith("labsuite-session-"):
                homes["session source_id"].add(name)
            if isinstance(value, str) and "A-Za-z0-9" in value and "{0,31}" in value:
                homes["participant rule"].add(name)
    assert homes == {"gravity": {"labsuite.constants"}, "session source_id": {"labsuite.ids"},
                     "participant rule": {"labsuite.ids"}}
