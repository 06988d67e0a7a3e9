"""Imports inside fxvae flow one way, so that no two modules need each other to load."""

from __future__ import annotations

import ast
from pathlib import Path

import fxvae

ROOT = Path(fxvae.__file__).parent


def module_name(path: Path) -> str:
    """``fxvae/study/plots.py`` -> ``fxvae.study.plots``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str], *, lazy: bool = False) -> set[str]:
    """The fxvae modules that ``path`` imports as it loads: its module-level ``import`` and ``from ... import``
    statements, those inside module-level ``if``/``try`` blocks included (``if TYPE_CHECKING:`` too: types that
    need each other are modules that do); with ``lazy``, those inside functions too (which run later, once both
    modules have loaded). ``from a.b import c`` names the module ``a.b.c`` where that is one, else ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    statements = list(ast.walk(tree)) if lazy else list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If | ast.Try) and not lazy:
            statements += node.body + node.orelse + getattr(node, "finalbody", [])
            statements += [s for handler in getattr(node, "handlers", []) for s in handler.body]
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {name for name in found if name in known}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found), lazy=lazy) - {name} for name, path in found.items()}


def test_the_cycle_check_finds_a_cycle_and_passes_a_chain() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_resolve_submodules_and_leave_lazy_ones_out_unless_asked() -> None:
    known = set(modules())
    assert "fxvae.latents.registry" in imports(ROOT / "convert.py", known)
    density = ROOT / "measure" / "density.py"
    assert "fxvae.convert" not in imports(density, known)  # imported inside a function
    assert "fxvae.convert" in imports(density, known, lazy=True)
    assert "fxvae.study.plots" in imports(ROOT / "study" / "comparison.py", known)  # ``from fxvae.study import plots``
    assert "fxvae.study" not in imports(ROOT / "study" / "comparison.py", known)


def test_no_import_cycle_inside_fxvae() -> None:
    """No two modules need each other to load; lazy imports inside functions do not count."""
    assert import_cycles(import_graph()) == []


def test_the_study_imports_flow_one_way_lazy_imports_included() -> None:
    """The study's records know nothing of what is said about them: the report, verdicts and pictures import the
    records, the result imports those, and no import, however late it runs, goes back up."""
    cycles = [c for c in import_cycles(import_graph(lazy=True)) if any(m.startswith("fxvae.study.") for m in c)]
    assert cycles == []


def test_no_import_cycle_inside_fxvae_lazy_imports_included() -> None:
    """Not even an import inside a function goes back up: sampling sits above both the split and the densities
    it decodes, so that the split never reaches for a density."""
    assert import_cycles(import_graph(lazy=True)) == []
