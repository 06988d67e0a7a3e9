"""``fxvae compare``: a checkpoint and a data file to a report, the refusals around --out, and Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fxvae
from fxvae.cli import ExitCode, app
from fxvae.study import loop

DIGITS = str(Path(__file__).with_name("digits.py"))
MODEL = f"{DIGITS}:DigitsAE"
QUICK = ("--quick", "--k", "1", "--final-k", "2", "--likelihood", "bernoulli")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(trained: tuple, tmp_path: Path) -> dict[str, str]:
    ae, data = trained
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    np.save(tmp_path / "digits.npy", data.numpy())
    return {"checkpoint": str(tmp_path / "ae.pt"), "data": str(tmp_path / "digits.npy"), "out": str(tmp_path / "r")}


def _compare(files: dict[str, str], *options: str) -> tuple[int, str, str]:
    paths = ("--checkpoint", files["checkpoint"], "--data", files["data"], "--out", files["out"])
    return run("compare", MODEL, *paths, *QUICK, *options)


def test_compare_writes_the_report_and_prints_the_verdict(files: dict[str, str]) -> None:
    code, out, err = _compare(files, "--starts", "scratch,warm,ae", "--image-shape", "8,8")
    assert code == 0, err
    assert "Before any step" in out and f"wrote {Path(files['out']) / 'report.md'}" in out
    result = fxvae.study.read(files["out"])
    assert result.starts == ["scratch", "warm", "ae"]
    assert result.config["options"]["epochs"] == 2 and result.config["options"]["image_shape"] == [8, 8]


def test_an_out_that_holds_a_comparison_needs_resume_or_force(files: dict[str, str]) -> None:
    assert _compare(files, "--starts", "scratch,warm")[0] == 0
    code, _, err = _compare(files, "--starts", "scratch,warm")
    assert code == ExitCode.USAGE and "pass --resume to continue it, or --force to start over" in err
    assert _compare(files, "--starts", "scratch,warm", "--resume")[0] == 0
    assert _compare(files, "--starts", "scratch,warm", "--force")[0] == 0


def test_ctrl_c_keeps_the_finished_epochs_and_says_how_to_resume(files: dict[str, str], monkeypatch) -> None:
    def stop(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Run, "train_epoch", stop)
    code, _, err = _compare(files, "--starts", "scratch,warm")
    assert code == 130
    assert "continue with --resume" in err
    assert len(fxvae.study.read(files["out"]).runs) == 2  # epoch 0 of each start is on disk


def test_data_that_does_not_fit_the_likelihood_is_a_data_error(files: dict[str, str], tmp_path: Path) -> None:
    np.save(tmp_path / "wide.npy", 3 * np.ones((50, 64), dtype=np.float32))
    code, _, err = _compare({**files, "data": str(tmp_path / "wide.npy")}, "--starts", "scratch,warm")
    assert code == ExitCode.DATA and r"needs targets in [0, 1]" in err
