"""``fxvae compare``: a checkpoint and a data file to a report, the refusals around --out, and Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fxvae
from fxvae.cli.app import app
from fxvae.cli.errors import ExitCode
from fxvae.study import loop

ROOT = Path(__file__).resolve().parent.parent
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


def test_compare_prints_the_ae_against_its_vaes_before_which_vae_start(files: dict[str, str]) -> None:
    code, out, err = _compare(files, "--starts", "ae,scratch,warm", "--density", "gaussian")
    assert code == 0, err
    assert out.index("AE vs VAE:") < out.index("What the VAE gains") < out.index("Which VAE start:")
    assert out.index("Which VAE start:") < out.index("Before any step")


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


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "\x1b[" not in err, err
    return lines[0]


def test_a_discrete_quick_comparison_runs_its_own_default_starts(files: dict[str, str]) -> None:
    code, _, err = _compare(files, "--latent", "vq", "--codebook-size", "8")
    assert code == 0, err
    assert fxvae.study.read(files["out"]).starts == ["scratch", "warm", "random"]


def test_a_start_of_the_other_latent_family_is_one_line_naming_the_valid_starts(files: dict[str, str]) -> None:
    code, _, err = _compare(files, "--latent", "fsq", "--starts", "scratch,calibrated")
    assert code == ExitCode.USAGE
    line = _one_error_line(err)
    assert "'calibrated' start is for a Gaussian latent" in line and "scratch, warm, random, ae" in line


def test_the_held_out_split_warning_is_one_line_on_stderr_and_ae_train_removes_it(
    files: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = _compare(files, "--starts", "scratch,warm")
    assert code == 0
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "may have been trained on" in warned[0] and "--ae-train" in warned[0]
    data = np.load(files["data"])
    np.save(tmp_path / "ae_train.npy", data[:360])
    code, _, err = _compare(files, "--starts", "scratch,warm", "--force", "--ae-train", str(tmp_path / "ae_train.npy"))
    assert code == 0, err
    assert "warning: " not in err
    assert fxvae.study.read(files["out"]).config["data"]["test"] == 40


def test_every_runs_final_model_is_read_by_evaluate(files: dict[str, str]) -> None:
    assert _compare(files, "--starts", "warm,ae")[0] == 0
    for start in ("warm", "ae"):
        model_file = str(Path(files["out"]) / "models" / f"{start}-seed0.safetensors")
        code, out, err = run(
            "evaluate", model_file, "--model", MODEL, "--data", files["data"], "--likelihood", "bernoulli", "--json"
        )
        assert code == 0, err
        assert [record["kind"] for record in json.loads(out)] == ["vae" if start == "warm" else "ae"]


def test_progress_reaches_stderr_as_lines_when_it_is_no_terminal(files: dict[str, str]) -> None:
    code, _, err = _compare(files, "--starts", "scratch,warm")
    assert code == 0
    epochs = [line for line in err.splitlines() if line.startswith("comparing: ")]
    assert len(epochs) == 2 * 3 and "warm seed 0 epoch 2/2: held-out -ELBO" in epochs[-1]


HOLD = """
import sys, time
from pathlib import Path
from fxvae.study import ledger
with ledger.locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_an_out_held_by_another_comparison_is_refused_naming_its_process(files: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, files["out"]], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _compare(files, "--starts", "scratch,warm")
    finally:
        holder.kill()
        holder.wait()
    assert code == ExitCode.USAGE
    line = _one_error_line(err)
    assert f"{files['out']!r} is in use by another comparison (process {holder.pid})" in line
    assert not (Path(files["out"]) / "metrics.jsonl").exists()
    # Killed, the holder leaves nothing behind: the folder is free.
    assert _compare(files, "--starts", "scratch,warm")[0] == 0


def digit_row_means(batch: torch.Tensor) -> torch.Tensor:
    """Each flattened 8x8 digit's row means."""
    return batch.reshape(len(batch), 8, 8).mean(2)


def row_means() -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``--features`` factory."""
    return digit_row_means


def test_label_files_and_a_features_factory_reach_the_final_records(files: dict[str, str], tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    (tmp_path / "classes.csv").write_text("\n".join(map(str, load_digits().target[:400])))
    np.save(tmp_path / "anomalies.npy", (np.arange(400) % 10 == 0).astype(np.int64))
    options = ("--starts", "warm,ae", "--density", "gaussian", "--labels", str(tmp_path / "classes.csv"))
    options += ("--anomaly-labels", str(tmp_path / "anomalies.npy"), "--features", f"{__file__}:row_means")
    code, _, err = _compare(files, *options)
    assert code == 0, err
    finals = [r for r in fxvae.study.ledger.records(Path(files["out"]) / "metrics.jsonl") if r["type"] == "final"]
    for final in finals:
        axes = final["axes"]
        assert axes["probe"]["value"] > 0.5 and axes["auroc"] is not None
        assert axes["samples"][next(iter(axes["samples"]))]["features"] == "digit_row_means"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--test-labels", "t.csv"), "--test-labels labels --test's samples: pass --labels for --data's too"),
        (("--labels", "l.csv", "--test-labels", "t.csv"), "--test-labels labels the samples of --test: pass --test"),
        (("--anomaly-labels", "a.csv", "--test", "d.npy"), "--anomaly-labels with --test: pass --test-anomaly-labels"),
    ],
)
def test_test_labels_go_with_test_data_or_it_is_a_usage_error(
    files: dict[str, str], options: tuple, message: str
) -> None:
    code, _, err = _compare(files, *options)
    assert code == ExitCode.USAGE and message in _one_error_line(err)


def test_labels_of_the_wrong_length_are_one_line_naming_both_lengths(files: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "classes.csv").write_text(",".join(["1"] * 399))
    code, _, err = _compare(files, "--labels", str(tmp_path / "classes.csv"))
    assert code == ExitCode.DATA
    assert "error: labels holds 399 labels, but the training data holds 400 samples" in err.splitlines()[-1]


@pytest.mark.parametrize(("flags", "fold"), [((), True), (("--no-fold",), False), (("--fold",), True)])
def test_the_fold_flag_reaches_the_comparisons_gaussian_config(
    flags: tuple[str, ...], fold: bool, tmp_path: Path, monkeypatch
) -> None:
    from tests import cli_models

    torch.save(cli_models.mlp_ae().state_dict(), tmp_path / "ae.pt")
    torch.save(torch.randn(40, 16), tmp_path / "data.pt")
    given = []

    def record(ae, train, test, options, **kwargs):
        given.append(options)
        raise KeyboardInterrupt

    monkeypatch.setattr("fxvae.cli.compare.run_comparison", record)
    paths = ("--checkpoint", str(tmp_path / "ae.pt"), "--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "r"))
    code, _, err = run("compare", "tests/cli_models.py:mlp_ae", *paths, *flags)
    assert code == 130, err
    assert [o.fold for o in given] == [fold]
    assert given[0].latent_config().fold is fold
