"""The docs' examples run after ``pip install`` alone: no runnable block loads a model from this repository's
``tests/`` or ``benchmarks/`` (the models ship in ``fxvae.examples``), and the README's command line runs in a
folder where fxvae is the only importable package of this checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DocsBlock, docs_blocks, docs_markdown_files

ROOT = Path(__file__).resolve().parent.parent

_REPOSITORY = r"(?<![\w./-])(?:tests|benchmarks)"
REPOSITORY_MODULE = re.compile(
    rf"(?P<path>{_REPOSITORY}/[\w/]+\.py:\w+"  # MODEL as a file: tests/cli_models.py:mlp_ae
    rf"|{_REPOSITORY}(?:\.\w+)+:\w+"  # MODEL as a module: tests.cli_models:mlp_ae
    rf"|\bfrom\s+{_REPOSITORY}(?:\.\w+)*\s+import\b"  # from tests.cli_models import, from tests import
    rf"|\bimport\s+{_REPOSITORY}\b)"  # import tests.digits
)
"""A model or module of the repository, as a command's MODEL or a Python import."""


def _runnable_blocks(page: Path) -> list[DocsBlock]:
    return [b for b in docs_blocks(page.read_text(encoding="utf-8"), page.name) if b.runs and b.skip is None]


def _repository_modules(page: Path) -> list[str]:
    return [
        f"{page.relative_to(ROOT)}:{block.line + 1 + block.source.count(chr(10), 0, match.start())}: {match['path']}"
        for block in _runnable_blocks(page)
        for match in REPOSITORY_MODULE.finditer(block.source)
    ]


@pytest.mark.parametrize(
    "text",
    [
        'python -c "from tests.cli_models import mlp_ae"\n',
        "fxvae inspect tests/cli_models.py:mlp_ae --input-shape 2,16\n",
        "fxvae bench benchmarks/models.py:conv_ae --input-shape 1,3,32,32\n",
        "fxvae convert tests.cli_models:mlp_ae --checkpoint ae.pt\n",
        "from benchmarks.models import conv_ae\n",
        "from tests import cli_models\n",
        "import tests.digits as digits\n",
    ],
)
def test_a_repository_module_in_a_block_is_recognised(text: str) -> None:
    assert REPOSITORY_MODULE.search(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "fxvae inspect fxvae.examples:mlp_ae --input-shape 2,16\n",
        "fxvae compare m.py:f --data my_tests/data.pt --out tests_out/\n",
        "echo 'the tests passed'\n",
        "from fxvae.examples import mlp_ae  # the tests use it too\n",
    ],
)
def test_other_text_in_a_block_is_not_a_repository_module(text: str) -> None:
    assert REPOSITORY_MODULE.search(text) is None


@pytest.mark.parametrize("page", [page.relative_to(ROOT).as_posix() for page in docs_markdown_files(ROOT)])
def test_no_runnable_block_loads_a_model_from_the_repository(page: str) -> None:
    assert _repository_modules(ROOT / page) == []


@pytest.fixture
def installed_only(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who ran ``pip install .``: this checkout's fxvae importable, and nothing else
    of the repository (no ``tests``, ``benchmarks`` or ``examples``)."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "fxvae").symlink_to(ROOT / "fxvae", target_is_directory=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_outside_the_repository_only_fxvae_is_importable(tmp_path: Path, installed_only: dict[str, str]) -> None:
    code = "import importlib.util as u, fxvae; print(fxvae.__file__, [u.find_spec(m) for m in ('tests', 'benchmarks')])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=installed_only, capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[0].startswith(str(tmp_path / "site-packages" / "fxvae"))
    assert out.split(" ", 1)[1].strip() == "[None, None]"


def test_the_readmes_command_line_runs_where_only_fxvae_is_installed(
    tmp_path: Path, installed_only: dict[str, str]
) -> None:
    shell_blocks = [b for b in _runnable_blocks(ROOT / "README.md") if b.lang != "python"]
    assert len(shell_blocks) >= 2  # compare, then the command line section
    work = tmp_path / "work"
    work.mkdir()
    for block in shell_blocks:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.source],
            cwd=work,
            env=installed_only,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"README.md:{block.line}: exit code {result.returncode}\n{result.stdout}"
