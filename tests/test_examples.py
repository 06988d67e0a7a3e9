"""The runnable examples, on a tiny budget, so that they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--seeds", "1", "--epochs", "2", "--ae-epochs", "1", "--max-steps", "2", "--quiet"]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path: examples are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so the module must be registered first.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("rich")
    return load_example("compare_ae_vae")


def read_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed(compare: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], Path | None]:
    """One tiny study, stopped after 3 runs and resumed: (folder, the lines the stop left, the report)."""
    folder = tmp_path_factory.mktemp("compare")
    assert compare.main(["--out", str(folder), *TINY, "--stop-after", "3"]) is None
    stopped = read_lines(folder)
    assert not (folder / "report.md").exists()
    return folder, stopped, compare.main(["--out", str(folder), *TINY, "--resume"])


def test_compare_ae_vae_writes_report_figures_and_finite_metrics_for_every_start(
    compare: ModuleType, resumed: tuple[Path, list[dict], Path | None]
) -> None:
    folder, _, report = resumed

    assert report is not None
    for figure in ("curves", "terms", "recon", "samples"):
        assert (folder / f"compare_{figure}.png").stat().st_size > 0
    text = report.read_text()
    assert "## Every start against scratch" in text
    assert re.search(r"\b(nan|inf)\b", text) is None
    curves = json.loads((folder / "metrics.json").read_text())
    vae_runs = {c["name"]: c for c in curves if c["name"] != "AE"}
    assert set(vae_runs) == {start.name for start in compare.STARTS}
    for start in (*compare.CALIBRATED, *compare.IDEAS):
        assert f"| {start.name} |" in text
    for curve in vae_runs.values():
        assert len(curve["neg_elbo"]) == 3  # before training, then one entry per epoch
        assert all(math.isfinite(v) for v in curve["neg_elbo"] + curve["recon"] + curve["kl"])


def test_compare_ae_vae_writes_each_run_as_it_finishes_and_resume_skips_them(
    compare: ModuleType, resumed: tuple[Path, list[dict], Path | None]
) -> None:
    folder, stopped, _ = resumed

    assert [c["name"] for c in stopped] == ["AE", compare.STARTS[0].name, compare.STARTS[1].name]
    finished = read_lines(folder)
    assert finished[:3] == stopped  # kept, not run again
    names = [c["name"] for c in finished]
    assert len(names) == len(set(names)) == 1 + len(compare.STARTS)
    assert len(json.loads((folder / "metrics.json").read_text())) == len(names)


def test_compare_ae_vae_trains_with_the_thread_count_it_is_given_and_prints_it(
    compare: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    wanted = before + 1  # neither the example's default (1) nor what the process already runs with

    compare.main(["--out", str(tmp_path), *TINY, "--stop-after", "2", "--threads", str(wanted)])

    printed = capsys.readouterr().out
    assert f"torch threads: {wanted}" in printed
    assert "--resume finishes the study" in printed
    assert {c["threads"] for c in read_lines(tmp_path)} == {wanted}
    assert torch.get_num_threads() == before  # restored for the rest of the process


def test_compare_ae_vae_uses_one_thread_unless_told_otherwise(compare: ModuleType, tmp_path: Path) -> None:
    assert compare.parse(["--out", str(tmp_path)]).threads == 1
