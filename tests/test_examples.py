"""The runnable examples, on a tiny budget, so that they cannot rot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.helpers import load_example

TINY = ["--epochs", "1", "--ae-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    return load_example("compare_ae_vae")


def test_the_default_example_is_one_compare_call_with_a_report_and_pictures(
    example: ModuleType, tmp_path: Path
) -> None:
    report = example.main(["--out", str(tmp_path), *TINY])
    text = report.read_text()
    for start in example.STARTS:
        assert f"| {start} |" in text
    assert re.search(r"\b(nan|inf)\b", text) is None
    for picture in ("curves", "reconstructions", "samples", "kl_per_dim"):
        assert (report.parent / f"{picture}.png").stat().st_size > 0


def test_the_full_study_writes_each_comparison_and_the_summary(example: ModuleType, tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--full", "--pairs", "digits,signal", "--recipes", "constant,warm-up"]
    summary = example.main([*args, "--seeds", "1", *TINY])
    text = summary.read_text()
    assert "## 1-d conv AE on synthetic signals" in text and "| warm-up | calibrated |" in text
    rows = json.loads((tmp_path / "study.json").read_text())
    assert {(r["pair"], r["recipe"]) for r in rows} == {
        (p, r) for p in ("digits", "signal") for r in ("constant", "warm-up")
    }
    assert (tmp_path / "signal" / "warm-up" / "report.md").exists()
    # --resume reads the finished comparisons back instead of running them again.
    before = (tmp_path / "digits" / "constant" / "metrics.jsonl").read_text()
    example.main([*args, "--seeds", "1", *TINY, "--resume"])
    assert (tmp_path / "digits" / "constant" / "metrics.jsonl").read_text() == before


def test_the_example_trains_with_the_thread_count_it_is_given_and_restores_it(
    example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    wanted = before + 1
    example.main(["--out", str(tmp_path), *TINY, "--threads", str(wanted)])
    assert f"torch threads: {wanted}" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    assert example.parse([]).threads == 1


def test_the_tokenizer_study_compares_a_fitted_quantiser_with_a_random_one_and_scratch(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    study = load_example("tokenizer_study")
    summary = study.main(["--out", str(tmp_path), *TINY])
    text = summary.read_text()
    for start in study.STARTS:
        assert f"| {start} |" in text
    rows = json.loads((tmp_path / "tokens.json").read_text())["runs"]
    warm = next(r for r in rows if r["start"] == "warm")
    assert warm["latent"] == "vq" and warm["codes_used"] and warm["epoch0"]


@pytest.fixture(scope="module")
def warm_start() -> ModuleType:
    pytest.importorskip("sklearn")
    return load_example("warm_start_study")


def test_the_warm_start_study_trains_only_the_starts_each_ablation_moves(
    warm_start: ModuleType, tmp_path: Path
) -> None:
    ablations = "default,module,codes x10"
    args = ["--out", str(tmp_path), "--full", "--pairs", "digits", "--ablations", ablations, "--seeds", "1", *TINY]
    summary = warm_start.main(args).read_text()
    assert all(f"| {name} |" in summary for name in ablations.split(","))
    runs = {
        folder.name: {json.loads(line).get("start") for line in (folder / "metrics.jsonl").read_text().splitlines()}
        for folder in (tmp_path / "warm_start" / "digits").iterdir()
    }
    assert runs["default"] >= {"scratch", "warm", "calibrated"}
    assert runs["module"] - {None} == {"calibrated"}
    assert runs["codes_x10"] - {None} == {"warm", "calibrated"}


def test_the_rescaled_ae_computes_the_same_function_with_larger_codes(warm_start: ModuleType) -> None:
    pair = warm_start.PAIRS["digits"]
    torch.manual_seed(0)
    ae, x = pair.model().eval(), torch.rand(16, 64)
    twin = warm_start.rescaled(ae, 10.0)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ae(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(twin.encoder(x), 10.0 * ae.encoder(x))
