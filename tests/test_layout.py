"""The measures of the layout (issue 22): short modules, no import cycle, the CLI on top, the encoder below
the features built on it, and every module in the README's code map (tests/test_code_map.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prompteol"
#: the most lines a module may have (a file that reads in one sitting; split it by concept beyond that)
MAX_LINES = 450
#: the packages built on the encoder: the encoder never imports them (nor the CLI)
ABOVE_ENCODER = ("corpus", "evaluation", "demos", "export", "serve", "train", "scale", "bench", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _import_nodes(tree: ast.Module, top_level_only: bool) -> list[ast.AST]:
    """Every import statement; with ``top_level_only`` those run when the module is imported (not inside a
    function, not under ``if TYPE_CHECKING``)."""
    if not top_level_only:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """The prompteol modules ``name`` imports (``from . import x`` resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _import_nodes(tree, top_level_only):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            if base.startswith("prompteol"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("prompteol"))
    return out


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}  # fmt: skip
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_no_import_cycle_at_import_time():
    """Module-level imports between prompteol's modules form no cycle (imports inside functions are lazy by
    design: the heavy stack loads on first use)."""
    modules = _modules()
    graph = {name: {m for m in _imports(name, path, True) if m in modules and m != name}
             for name, path in modules.items()}  # fmt: skip
    # a package imports its own submodules to re-export them: the package -> submodule edge is no cycle
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in seen:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        seen[node] = 2
        return None

    for name in sorted(graph):
        if name not in seen:
            cycle = visit(name)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_outside_the_cli_imports_it():
    bad = [f"{name} imports {m}" for name, path in _modules().items() if not name.startswith("prompteol.cli")
           for m in _imports(name, path, False) if m == "prompteol.cli" or m.startswith("prompteol.cli.")]  # fmt: skip
    assert not bad, "the CLI is the top layer:\n" + "\n".join(bad)


def test_the_encoder_imports_nothing_built_on_it():
    above = tuple(f"prompteol.{p}" for p in ABOVE_ENCODER)
    bad = [f"{name} imports {m}" for name, path in _modules().items() if name.startswith("prompteol.encoder")
           for m in _imports(name, path, False) if m.startswith(above)]  # fmt: skip
    assert not bad, "the encoder is below its callers:\n" + "\n".join(bad)
