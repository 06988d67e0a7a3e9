"""The collector that runs the Markdown pages' code blocks (root conftest.py): parsing, and a run of pytest
on a small project whose pages exercise each rule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from conftest import DocsBlock, docs_blocks, docs_markdown_files
from fxvae.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
FXVAE_COMMANDS = tuple(sorted(app.commands))
"""Every command of ``fxvae``, read from the command line itself so that a new one needs its docs."""


def test_blocks_keep_language_fence_line_and_text_and_dedent_list_items() -> None:
    text = "# t\n\n```python\nx = 1\n```\n\n- item\n\n    ```bash\n    fxvae --help\n    ```\n"
    assert docs_blocks(text, "t.md") == [
        DocsBlock("python", "x = 1\n", 3, None),
        DocsBlock("bash", "fxvae --help\n", 9, None),
    ]


def test_a_skip_marker_on_the_line_before_the_fence_carries_its_reason() -> None:
    text = "<!-- docs-test: skip needs a CUDA GPU -->\n```python\nx = 1\n```\n"
    assert docs_blocks(text, "t.md")[0].skip == "needs a CUDA GPU"


def test_a_skip_marker_without_a_reason_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("t.md:1: `docs-test: skip` needs a reason")):
        docs_blocks("<!-- docs-test: skip -->\n```python\nx = 1\n```\n", "t.md")


def test_an_unclosed_fence_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("t.md:2: the code fence is never closed")):
        docs_blocks("text\n```python\nx = 1\n", "t.md")


@pytest.mark.parametrize(
    ("lang", "source", "runs"),
    [
        ("python", "x = 1\n", True),
        ("console", "$ fxvae --help\n", True),
        ("bash", "fxvae inspect m.py:f --input-shape 2,16\n", True),
        ("bash", "python -c 'print(1)'\nfxvae convert m.py:f --checkpoint a.pt\n", True),
        ("bash", "pip install -e .\n", False),
        ("bash", "python -m pytest\n", False),
        ("text", "fxvae --help\n", False),
        ("", "before: y --> z\n", False),
    ],
)
def test_python_console_and_shell_blocks_that_call_fxvae_run(lang: str, source: str, runs: bool) -> None:
    assert DocsBlock(lang, source, 1, None).runs is runs


def test_every_fxvae_command_line_in_the_docs_is_in_a_block_that_runs() -> None:
    not_run = [
        f"{path.relative_to(ROOT)}:{block.line}"
        for path in docs_markdown_files(ROOT)
        for block in docs_blocks(path.read_text(encoding="utf-8"), path.name)
        if any(line.lstrip().removeprefix("$ ").startswith("fxvae ") for line in block.source.splitlines())
        and (not block.runs or block.skip is not None)
    ]
    assert not_run == []


def test_every_command_of_the_cli_has_a_docs_example_that_runs() -> None:
    shown = {
        command
        for path in docs_markdown_files(ROOT)
        for block in docs_blocks(path.read_text(encoding="utf-8"), path.name)
        if block.runs and block.lang != "python"
        for line in block.source.splitlines()
        for command in FXVAE_COMMANDS
        if line.lstrip().removeprefix("$ ").startswith(f"fxvae {command} ")
    }
    assert shown == set(FXVAE_COMMANDS)


def _prose_of_section(path: Path, heading: str) -> str:
    """The text of a page under ``heading``, up to the next heading, without its code blocks."""
    text = "\n" + path.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = text.find("\n#", start)
    return "".join(text[start : end if end >= 0 else len(text)].split("```")[::2])


@pytest.mark.parametrize(
    ("page", "heading"), [("README.md", "## Command line"), ("docs/cli.md", "# The `fxvae` command line")]
)
def test_the_pages_that_introduce_the_command_line_name_every_command(page: str, heading: str) -> None:
    prose = _prose_of_section(ROOT / page, heading)
    assert [c for c in FXVAE_COMMANDS if f"`{c}`" not in prose] == []


PAGE = """# A page

```python
value = 41
```

Text between blocks.

```python
value += 1
with open("answer.txt", "w") as f:
    f.write(str(value))
```

```bash
test "$(cat answer.txt)" = 42
fxvae --version
```

```console
$ echo "the answer is $(cat answer.txt)"
the answer is 42
```

<!-- docs-test: skip needs eight GPUs -->
```python
raise RuntimeError("never runs")
```

```python
assert value == 42
```
"""

BROKEN = """# Broken

```python
undefined_name
```

```python
reached = True
```
"""

CONSOLE = """# Console

```console
$ echo one
two
```
"""


@pytest.fixture(scope="module")
def pages_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str]:
    """pytest on a project with the root conftest.py and two pages: one that passes, one that fails."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(conftest.__file__, project / "conftest.py")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "README.md").write_text(PAGE)
    (project / "docs").mkdir()
    (project / "docs" / "broken.md").write_text(BROKEN)
    (project / "docs" / "console.md").write_text(CONSOLE)
    (project / "notes.md").write_text("```python\nraise RuntimeError('not a docs page')\n```\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_blocks_of_a_page_share_names_files_and_run_in_order(pages_run: tuple[int, str]) -> None:
    _, output = pages_run
    for block in ("python@3", "python@9", "bash@15", "console@20", "python@30"):
        assert f"PASSED README.md::{block}" in output


def test_a_skipped_block_does_not_run_and_its_reason_is_printed(pages_run: tuple[int, str]) -> None:
    _, output = pages_run
    assert "SKIPPED [1] README.md: docs-test: skip needs eight GPUs" in output
    assert "Markdown blocks not run (docs-test: skip)" in output
    assert "README.md:26 python: needs eight GPUs" in output


def test_a_failing_block_fails_with_its_page_line_and_later_blocks_are_skipped(pages_run: tuple[int, str]) -> None:
    code, output = pages_run
    assert code == 1
    assert "FAILED docs/broken.md::python@3" in output
    assert 'File "' in output and 'broken.md", line 4, in <module>' in output
    assert "NameError: name 'undefined_name' is not defined" in output
    assert "SKIPPED [1] docs/broken.md:7: the block at line 3 of this file failed" in output


def test_a_console_block_fails_when_the_output_differs(pages_run: tuple[int, str]) -> None:
    _, output = pages_run
    assert "FAILED docs/console.md::console@3" in output
    assert "$ echo one\n--- the page\n+++ the command\n@@ -1 +1 @@\n-two\n+one" in output


def test_only_readme_and_docs_pages_are_collected(pages_run: tuple[int, str]) -> None:
    _, output = pages_run
    assert "notes.md" not in output
    assert output.splitlines()[-1].startswith("=") and "2 failed, 5 passed, 2 skipped" in output.splitlines()[-1]
