"""Packages depend one way: the imports, read from the source, against torchslim/layering.py."""

import ast
import pathlib

import pytest

from torchslim import layering

ROOT = pathlib.Path(__file__).resolve().parents[1] / "torchslim"


def _module_parts(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return (parts[:-1], True) if parts[-1] == "__init__" else (parts, False)


def _targets(node, parts, is_package):
    """Absolute dotted names an import statement reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module == "torchslim":  # ``from torchslim import x``: x names a subpackage or a facade name
        return [f"torchslim.{alias.name}" for alias in node.names]
    return [module]


def _package_of_target(name):
    parts = name.split(".")
    if parts[0] != "torchslim":
        return None
    if len(parts) == 1:
        return "config"  # ``import torchslim`` alone: the facade, which imports nothing at load
    return layering.ROOT_NAMES.get(parts[1], parts[1])


def _package_of_file(parts):
    return parts[1] if len(parts) > 1 else None  # None: the top-level facade, torchslim/__init__.py


def _imports():
    """(file, line, source package, target name, inside a function, source line) for every import."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        inner = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
        parts, is_package = _module_parts(path)
        rel = str(path.relative_to(ROOT.parent))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, parts, is_package):
                    found.append((rel, node.lineno, _package_of_file(parts), target, id(node) in inner,
                                  lines[node.lineno - 1]))
    return found


IMPORTS = _imports()


def _package_edges():
    edges = {}
    for rel, line, source, target, _, _ in IMPORTS:
        package = _package_of_target(target)
        if source is None or package is None or package == source:
            continue
        edges.setdefault((source, package), []).append(f"{rel}:{line}")
    return edges


def _cycles(edges):
    """Strongly connected groups of more than one package (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_package_is_declared():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"}
    packages = {p.removesuffix(".py") for p in packages} - {"__init__", "recipes"}
    undeclared = sorted(p for p in packages if not any(p in names for names in layering.LAYERS))
    assert undeclared == []


def test_no_cycle_between_packages():
    edges = {edge: sites for edge, sites in _package_edges().items() if edge not in layering.EXCEPTIONS}
    report = []
    for group in _cycles(edges):
        inside = sorted((a, b) for a, b in edges if a in group and b in group)
        report.append(" <-> ".join(group) + ": " + "; ".join(f"{a}->{b} ({edges[a, b][0]})" for a, b in inside))
    assert report == []


def test_no_edge_against_the_declared_order():
    against = [f"{a} -> {b} ({', '.join(sites)})" for (a, b), sites in sorted(_package_edges().items())
               if layering.layer_of(b) > layering.layer_of(a) and (a, b) not in layering.EXCEPTIONS]
    assert against == []


def test_every_declared_exception_is_still_needed():
    edges = _package_edges()
    assert [edge for edge in layering.EXCEPTIONS if edge not in edges] == []


def test_imports_inside_functions_are_optional_or_marked_lazy():
    unmarked = [f"{rel}:{line}: {text.strip()}" for rel, line, _, target, inner, text in IMPORTS
                if inner and target.split(".")[0] not in layering.OPTIONAL_DEPS and "# lazy:" not in text]
    assert unmarked == []


@pytest.mark.parametrize("edge", [("cli", "pipeline"), ("export", "quant"), ("pipeline", "report")])
def test_the_checker_reads_real_imports(edge):
    # The checks above also pass on an empty graph: prove they see edges that do exist.
    assert edge in _package_edges()
    assert _cycles({edge: [], edge[::-1]: []}) == [sorted(edge)]
