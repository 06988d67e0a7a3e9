"""The documentation site: it builds with ``mkdocs build --strict``, its API pages render fxvae's docstrings as
Markdown, and the pictures of docs/howitworks.md come from scripts/docs_pictures.py."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` by path: scripts are not a package."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]" (scripts/install-dev.sh does)')
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cli = (site / "cli" / "index.html").read_text()
    assert "fxvae convert [OPTIONS] MODEL" in cli  # the reference generated from the click app
    api = (site / "api" / "index.html").read_text()
    assert "log_sigma_init" in api and "&gt;&gt;&gt;" in api
    assert (site / "img" / "howitworks_graphs.png").read_bytes()[:8] == PNG


def test_doctests_in_docstrings_become_fenced_pycon_blocks() -> None:
    pytest.importorskip("griffe", reason='griffe comes with the docs extra: pip install -e ".[docs]"')
    rewrite = load_script("griffe_docstrings").markdown_docstring
    text = "Call :func:`fxvae.convert`:\n\n    >>> f(1,\n    ...   2)\n    3\n\nThen more."
    fenced = "    ```pycon\n    >>> f(1,\n    ...   2)\n    3\n    ```"
    assert rewrite(text) == f"Call `fxvae.convert`:\n\n{fenced}\n\nThen more."


def test_a_doctest_at_the_end_of_a_docstring_is_closed() -> None:
    pytest.importorskip("griffe", reason='griffe comes with the docs extra: pip install -e ".[docs]"')
    rewrite = load_script("griffe_docstrings").markdown_docstring
    assert rewrite(">>> x\n1") == "```pycon\n>>> x\n1\n```"


def test_the_how_it_works_pictures_are_drawn_from_the_code(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason='the pictures need the plot extra: pip install -e ".[plot]"')
    written = load_script("docs_pictures").main(["--out", str(tmp_path)])
    assert [p.name for p in written] == ["howitworks_graphs.png", "howitworks_widths.png"]
    for path in written:
        assert path.read_bytes()[:8] == PNG
        assert (ROOT / "docs" / "img" / path.name).read_bytes()[:8] == PNG


def test_the_readme_links_to_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link}
    assert targets and [t for t in sorted(targets) if not (ROOT / t).exists()] == []
