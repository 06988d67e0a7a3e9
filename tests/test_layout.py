"""The package's layout, read from its source: each helper is written once, each name means one thing."""

from __future__ import annotations

import ast
import collections
from collections.abc import Iterator
from pathlib import Path

import fxvae
from fxvae.errors import first_line

PACKAGE = Path(fxvae.__file__).parent


def _modules(folder: Path = PACKAGE) -> Iterator[tuple[str, ast.Module]]:
    """Each module under ``folder`` as (path relative to the package's parent, parsed source)."""
    for path in sorted(folder.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _functions_named(name: str) -> list[str]:
    """The modules that define a function called ``name``, at any depth."""
    return sorted(
        where
        for where, tree in _modules()
        if any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name for n in ast.walk(tree))
    )


def test_first_line_quotes_the_first_line_without_escapes_or_the_unsafe_load_advice() -> None:
    err = RuntimeError("\n \x1b[1mWeights only load failed.\x1b[0m Re-running `torch.load` ...\nnext")
    assert first_line(err) == "Weights only load failed."
    assert first_line(ValueError("")) == ""


def test_only_errors_defines_first_line() -> None:
    assert _functions_named("_first_line") == []
    assert _functions_named("first_line") == ["fxvae/errors.py"]


def test_only_convert_defines_a_function_named_recipe() -> None:
    assert _functions_named("_recipe") in ([], ["fxvae/convert.py"])


def test_data_files_are_read_in_one_place() -> None:
    assert _functions_named("read_data") == ["fxvae/io/datafiles.py"]


def test_no_two_analysis_modules_define_the_same_name() -> None:
    owners = collections.defaultdict(list)
    for where, tree in _modules(PACKAGE / "analysis"):
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                owners[node.name].append(where)
    assert {name: places for name, places in owners.items() if len(places) > 1} == {}


def test_ops_imports_nothing_of_fxvae_but_ops_and_errors() -> None:
    imported = {
        node.module
        for _, tree in _modules(PACKAGE / "ops")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for _, tree in _modules(PACKAGE / "ops")
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    ours = {m for m in imported if m == "fxvae" or m.startswith("fxvae.")}
    assert {m for m in ours if m != "fxvae.errors" and not m.startswith("fxvae.ops")} == set()


def _reads_meta_by_literal(node: ast.AST) -> bool:
    """``x.meta["fxvae"]`` or ``x.meta.get("fxvae", ...)``: the recipe's key spelled out."""
    literal = ast.Constant(value=fxvae.recipe.META_KEY)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "meta":
        return ast.dump(node.slice) == ast.dump(literal)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop"):
        owner = node.func.value
        return (
            isinstance(owner, ast.Attribute)
            and owner.attr == "meta"
            and bool(node.args)
            and ast.dump(node.args[0]) == ast.dump(literal)
        )
    return False


def test_the_recipe_is_found_on_a_vae_by_meta_key_not_a_literal() -> None:
    spelled = [where for where, tree in _modules() for node in ast.walk(tree) if _reads_meta_by_literal(node)]
    assert spelled == []
