"""The package's import structure, read statically from the source: layers import downward, no circles,
and the project's own modules are imported at module top (see docs/CONTRIBUTING.md)."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latentquant"

# The layers whose structure these tests hold; train/ and results/ sit above them and use them all.
CHECKED = ("data", "models", "metrics")
# What each may import from the project besides itself and the leaves (validation, _optional, _atomic, _images).
ALLOWED = {"data": (), "models": ("quantize",), "metrics": ()}
LEAVES = ("validation", "_optional", "_atomic", "_images")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules of the project imported at module level, [(line, module)] imported inside a function)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    top, inner = set(), []

    def names(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:  # relative: `from . import _mi`, `from .dci import dci`
            parent = package.split(".")[: package.count(".") + 2 - node.level]
            base = ".".join(parent + ([base] if base else []))
        # `from latentquant.data import fetch` imports the module latentquant.data.fetch
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in names(child):
                    if name == "latentquant" or name.startswith("latentquant."):
                        if in_function:
                            inner.append((child.lineno, name))
                        else:
                            top.add(name)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return top, inner


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        top, _ = _imports(path)
        graph[name] = {m for m in top if m in MODULES and m != name}
    return graph


def _cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """A cycle among ``nodes`` (depth-first), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n] & nodes):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state and (found := visit(n)):
            return found
    return None


def _layer(module: str) -> str:
    """``latentquant.data.files`` -> ``data``; the layer's private modules (``_quantize_kernel``) -> ``quantize``."""
    name = module.split(".")[1] if module.count(".") else ""
    return "quantize" if name.startswith("_quantize") else name


@pytest.mark.parametrize("layer", CHECKED)
def test_layer_has_no_import_circle_and_imports_only_downward(layer):
    graph = _graph()
    mine = {m for m in graph if _layer(m) == layer}
    assert _cycle(graph, mine) is None
    allowed = {layer, *ALLOWED[layer], *LEAVES}
    outside = {(m, d) for m in mine for d in graph[m] if _layer(d) not in allowed}
    assert not outside, f"{layer} imports from layers above or beside it: {sorted(outside)}"


def _says_why(lines: list[str], lineno: int) -> bool:
    """The import on line ``lineno`` (1-based) or a comment just above it says it defers an optional dependency."""
    near = " ".join(lines[max(0, lineno - 3) : lineno]).lower()
    return "#" in near and ("defer" in near or "optional" in near)


@pytest.mark.parametrize("layer", CHECKED)
def test_own_modules_are_imported_at_module_top(layer):
    found = []
    for path in sorted((SRC / layer).rglob("*.py")):
        _, inner = _imports(path)
        lines = path.read_text().splitlines()
        found += [f"{path.relative_to(SRC)}:{line} {name}" for line, name in inner if not _says_why(lines, line)]
    assert not found, "imports of latentquant modules inside functions, no comment saying why: " + ", ".join(found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    assert _cycle(graph, {"a", "b", "d"}) is None


def test_library_layers_raise_no_user_error():
    """UserError is the command line's (docs/CONTRIBUTING.md): the library layers raise ValueError/TypeError."""
    library = [p for layer in CHECKED for p in (SRC / layer).rglob("*.py") if p.name != "cli.py"]
    library += sorted(SRC.glob("*quantize*.py"))
    assert len(library) > 20
    offenders = [str(p.relative_to(SRC)) for p in library if "UserError" in p.read_text()]
    assert not offenders, f"library modules naming UserError: {offenders}"


@pytest.mark.parametrize(
    "pattern, home",
    [
        (r"^IMAGE_SIZE\s*=", "_images.py"),  # the image format datasets render and backbones read
        (r"else default_root\(\)", "data/base.py"),  # the data root rule, data_root(root)
        (r"^(def|class) \w*check_fraction\b", "validation.py"),  # one name, one meaning
    ],
)
def test_a_shared_name_is_defined_in_one_place(pattern, home):
    regex = re.compile(pattern, re.MULTILINE)
    where = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if regex.search(p.read_text()))
    assert where == [home]
