"""Fixtures for the whole tree. The names below are what every docstring example in fxvae/ may use."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _pytest.doctest import DoctestItem
from torch import nn

import fxvae


def readme_autoencoder() -> nn.Module:
    """The README's MLP autoencoder: 64 -> 32 -> 8 (sigmoid latent) -> 32 -> 64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Sigmoid(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64)
    ).eval()


@pytest.fixture(autouse=True)
def _docstring_names(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Fresh objects for each docstring example: ``ae``, ``x``, ``vae``, ``kl``, ``tmp`` and the modules."""
    if not isinstance(request.node, DoctestItem):
        return
    ae = readme_autoencoder()
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    vae, kl = fxvae.convert(ae, x)
    request.node.dtest.globs.update(
        {"torch": torch, "nn": nn, "F": F, "fxvae": fxvae, "ae": ae, "x": x, "vae": vae, "kl": kl, "tmp": tmp_path}
    )


# --- Markdown code blocks as tests ---------------------------------------------------------------------------
# README.md and docs/*.md run as written. Each file is a notebook: its blocks run in order in one namespace
# and one scratch directory (where tests/, benchmarks/ and examples/ of the repository are visible), so a
# later block may use what an earlier one defined or wrote. Three kinds of fenced block are tests:
#
# - ```python: executed in the file's namespace;
# - ```bash (or sh) containing a line that starts with `fxvae`: run by `bash -e -o pipefail`, with this
#   interpreter's scripts first on PATH and this checkout first on PYTHONPATH; other shell blocks (installs,
#   `python -m pytest`) are not run;
# - ```console: each `$ command` runs and its output (stdout and stderr) must be the lines below it.
#
# A block opts out only with a comment on the line just before its fence, `<!-- docs-test: skip REASON -->`,
# and REASON is printed at the end of the run.

DOCS_VISIBLE = ("tests", "benchmarks", "examples")
"""Repository folders the blocks may read, linked into each file's scratch directory."""
DOCS_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*$")
DOCS_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
DOCS_SHELLS = ("bash", "sh", "shell")
DOCS_BLOCK_TIMEOUT_S = 300


def docs_markdown_files(root: Path) -> list[Path]:
    """The pages whose blocks are tests: README.md and docs/*.md under the rootdir."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass(frozen=True)
class DocsBlock:
    """A fenced block: its language, its text, the 1-based line of its opening fence, and an opt-out."""

    lang: str
    source: str
    line: int
    skip: str | None

    @property
    def runs(self) -> bool:
        if self.lang == "python" or self.lang == "console":
            return True
        return self.lang in DOCS_SHELLS and any(
            line.lstrip().startswith("fxvae ") or line.strip() == "fxvae" for line in self.source.splitlines()
        )


def docs_blocks(text: str, where: str) -> list[DocsBlock]:
    """The fenced blocks of a Markdown text, in order (indented fences in lists included)."""
    lines = text.splitlines()
    blocks: list[DocsBlock] = []
    i = 0
    while i < len(lines):
        fence = DOCS_FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent, start = fence["indent"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == f"{indent}```"), None)
        if end is None:
            raise ValueError(f"{where}:{start + 1}: the code fence is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[start + 1 : end]]
        marker = DOCS_SKIP.match(lines[start - 1]) if start > 0 else None
        if marker is not None and not marker["reason"]:
            raise ValueError(f"{where}:{start}: `docs-test: skip` needs a reason after it")
        skip = marker["reason"] if marker is not None else None
        blocks.append(DocsBlock(fence["lang"].lower(), "\n".join(body) + "\n", start + 1, skip))
        i = end + 1
    return blocks


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".md" and file_path.resolve() in docs_markdown_files(parent.config.rootpath.resolve()):
        return MarkdownFile.from_parent(parent, path=file_path)
    return None


class MarkdownFile(pytest.File):
    """One Markdown file: its runnable blocks, and the namespace and scratch directory they share."""

    def collect(self) -> Iterator[MarkdownBlock]:
        self.root = self.config.rootpath.resolve()
        relative = self.path.resolve().relative_to(self.root).as_posix()
        blocks = [b for b in docs_blocks(self.path.read_text(encoding="utf-8"), relative) if b.runs]
        self.blocks = blocks
        for index, block in enumerate(blocks):
            item = MarkdownBlock.from_parent(self, name=f"{block.lang}@{block.line}", index=index, block=block)
            if block.skip is not None:
                item.add_marker(pytest.mark.skip(reason=f"docs-test: skip {block.skip}"))
                self.config.stash.setdefault(_DOCS_SKIPPED, []).append(
                    f"{relative}:{block.line} {block.lang}: {block.skip}"
                )
            yield item

    def setup(self) -> None:
        self.done: set[int] = set()
        self.failed: int | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"fxvae-docs-{self.path.stem}-"))
        for name in DOCS_VISIBLE:
            if (self.root / name).is_dir():
                (self.workdir / name).symlink_to(self.root / name, target_is_directory=True)
        self.module = types.ModuleType("docs_" + re.sub(r"\W", "_", self.path.stem))
        self.module.__file__ = str(self.path)
        sys.modules[self.module.__name__] = self.module
        self.saved_cwd = Path.cwd()
        self.saved_env = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
        self.saved_rng = torch.get_rng_state()
        self.saved_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the pages' models are small: one thread is faster on a shared machine
        # What torchrun would set, on a free port: a distributed example runs here as a one-process job.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(s.getsockname()[1])})
        os.chdir(self.workdir)

    def teardown(self) -> None:
        os.chdir(self.saved_cwd)
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        torch.set_rng_state(self.saved_rng)
        torch.set_num_threads(self.saved_threads)
        sys.modules.pop(self.module.__name__, None)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run_through(self, index: int) -> None:
        """Run the blocks before ``index`` that have not run (a block selected alone needs them), then it."""
        for i in range(index + 1):
            if i in self.done or self.blocks[i].skip is not None:
                continue
            if self.failed is not None:
                # Reported at the block's own line, as a skip marker would be.
                message = f"the block at line {self.blocks[self.failed].line} of this file failed"
                raise pytest.skip.Exception(message, _use_item_location=True)
            self.done.add(i)
            try:
                self._run(self.blocks[i])
            except BaseException:
                self.failed = i
                raise

    def _run(self, block: DocsBlock) -> None:
        if block.lang == "python":
            # Leading newlines give the code its line numbers in the Markdown file, for tracebacks.
            code = compile("\n" * block.line + block.source, str(self.path), "exec")
            exec(code, self.module.__dict__)
        elif block.lang == "console":
            _docs_console(block, self.workdir, self.root)
        else:
            result = _docs_shell(["bash", "-e", "-o", "pipefail", "-c", block.source], self.workdir, self.root)
            if result.returncode != 0:
                raise DocsShellError(f"exit code {result.returncode}\n{result.stdout}")


class DocsShellError(Exception):
    """A shell block exited with a non-zero status, or printed other lines than the page shows."""


def _docs_shell(command: list[str], cwd: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DOCS_BLOCK_TIMEOUT_S,
        check=False,
    )


def _docs_console(block: DocsBlock, cwd: Path, root: Path) -> None:
    """Each ``$ command`` of the block must print exactly the lines that follow it."""
    sessions: list[tuple[str, list[str]]] = []
    for line in block.source.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif sessions:
            sessions[-1][1].append(line.rstrip())
        elif line.strip():
            raise DocsShellError(f"console block text before the first `$ ` command: {line!r}")
    for command, expected in sessions:
        got = [line.rstrip() for line in _docs_shell(["bash", "-c", command], cwd, root).stdout.splitlines()]
        while expected and not expected[-1]:
            expected.pop()
        if got != expected:
            diff = "\n".join(difflib.unified_diff(expected, got, "the page", "the command", lineterm=""))
            raise DocsShellError(f"$ {command}\n{diff}")


class MarkdownBlock(pytest.Item):
    """One runnable block; running it first runs the blocks above it in the same file."""

    def __init__(self, *, index: int, block: DocsBlock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.block = index, block

    def runtest(self) -> None:
        assert isinstance(self.parent, MarkdownFile)
        self.parent.run_through(self.index)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.block.line - 1, f"{self.block.lang} block at line {self.block.line}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        where = f"{self.path.name}:{self.block.line} ({self.block.lang} block)"
        if isinstance(excinfo.value, DocsShellError):
            return f"{where}\n{excinfo.value}"
        # Only the frames from the Markdown file down: the collector's own are noise here.
        entries = traceback.extract_tb(excinfo.tb)
        first = next((i for i, e in enumerate(entries) if e.filename == str(self.path)), 0)
        frames = "".join(traceback.format_list(entries[first:]))
        return f"{where}\n{frames}{''.join(traceback.format_exception_only(excinfo.value))}"


_DOCS_SKIPPED = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    skipped = config.stash.get(_DOCS_SKIPPED, [])
    if skipped:
        terminalreporter.section("Markdown blocks not run (docs-test: skip)")
        for line in skipped:
            terminalreporter.write_line(line)
