"""The package's own modules import each other at module top only, and without a circle
(a circle hidden by imports inside functions is still a circle)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "python" / "mmq"


def _imports(tree: ast.AST):
    """(node, module names of mmq it imports) for every import of an mmq module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mmq":
            parts = node.module.split(".")
            yield node, ({parts[1]} if len(parts) > 1 else {a.name.split(".")[0] for a in node.names})
        elif isinstance(node, ast.Import):
            names = {a.name.split(".")[1] for a in node.names if a.name.startswith("mmq.")}
            if names or any(a.name == "mmq" for a in node.names):
                yield node, names or {"__init__"}


def _graph():
    graph, inner = {}, []
    for path in sorted(PKG.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        type_checking = {id(n) for b in tree.body if isinstance(b, ast.If) and "TYPE_CHECKING" in ast.unparse(b.test)
                         for n in ast.walk(b)}
        deps = set()
        for node, names in _imports(tree):
            if id(node) in top:
                deps |= names
            elif id(node) not in type_checking:
                inner.append(f"{path.name}:{node.lineno}")
        graph[path.stem] = deps - {"_mmq", path.stem}
    return graph, inner


def test_no_import_of_mmq_inside_functions():
    _, inner = _graph()
    assert inner == []


def test_module_imports_have_no_circle():
    graph, _ = _graph()
    # cli imports the package (`import mmq`) only for its public names; the package
    # itself never imports cli, so that edge closes no circle.
    state: dict = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import circle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if d in graph:
                visit(d, path + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])
