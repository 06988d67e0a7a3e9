"""Tracking a comparison: every measured epoch's record to the callbacks and to TensorBoard event files, the
warning without tensorboard, a callback that raises, and resuming."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.multiprocessing as mp

import fxvae
from fxvae.errors import InputError
from fxvae.examples import mlp_ae
from fxvae.study import loop, tracking
from tests.helpers import free_port, gloo_group

TINY = {
    "starts": ("warm", "scratch"),
    "epochs": 2,
    "k": 1,
    "final_k": 2,
    "batch_size": 32,
    "density": ("gaussian",),
    "likelihood": "bernoulli",
    "progress": False,
}
# The held-out data is a split of the data the AE is given: tests/test_compare_holdout.py checks that warning.
pytestmark = pytest.mark.filterwarnings("ignore:the held-out data is a seeded")


@pytest.fixture
def pair() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return mlp_ae(), torch.rand(100, 16, generator=torch.Generator().manual_seed(1))


def epoch_lines(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == "epoch"]


def event_scalars(out: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every run's curves as the event files hold them: run -> tag -> [(epoch, value)]."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(out / tracking.FOLDER))
    runs.Reload()
    return {
        run: {
            tag: [(e.step, e.value) for e in runs.Scalars(run, tag)]
            for tag in runs.GetAccumulator(run).Tags()["scalars"]
        }
        for run in runs.Runs()
    }


def test_callbacks_get_every_epoch_record_as_metrics_jsonl_holds_it(pair: tuple, tmp_path: Path) -> None:
    ae, data = pair
    got: list[dict[str, Any]] = []
    fxvae.compare(ae, data, seeds=2, out=tmp_path, tensorboard=False, callbacks=[got.append], **TINY)
    assert len(got) == 2 * 2 * 3  # starts x seeds x epochs 0, 1, 2
    assert got == epoch_lines(tmp_path)
    assert {(r["start"], r["seed"], r["epoch"]) for r in got} == {
        (start, seed, epoch) for start in ("warm", "scratch") for seed in (0, 1) for epoch in (0, 1, 2)
    }


def test_callbacks_run_without_out_and_each_gets_its_own_copy(pair: tuple) -> None:
    ae, data = pair
    first: list[dict[str, Any]] = []

    def spoil(record: dict[str, Any]) -> None:
        record["eval"].clear()

    result = fxvae.compare(ae, data, callbacks=[spoil, first.append], **TINY)
    assert [r["eval"]["neg_elbo"]["value"] for r in first if r["start"] == "warm"] == [
        p.evaluation.neg_elbo.value for p in result.run("warm", 0).points
    ]


def test_the_event_files_hold_every_runs_curves_against_the_epoch(pair: tuple, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    ae, data = pair
    fxvae.compare(ae, data, seeds=2, out=tmp_path, **TINY)
    curves = event_scalars(tmp_path)
    assert sorted(curves) == ["scratch/seed0", "scratch/seed1", "warm/seed0", "warm/seed1"]
    lines = epoch_lines(tmp_path)
    for run, tags in curves.items():
        records = [r for r in lines if tracking.run_name(r) == run]
        assert {"train_loss", "seconds", "eval/neg_elbo", "eval/nll", "eval/recon", "eval/kl"} <= set(tags)
        assert [step for step, _ in tags["eval/neg_elbo"]] == [0, 1, 2]
        assert [step for step, _ in tags["train_loss"]] == [1, 2]  # none at epoch 0, before any step
        for name in ("neg_elbo", "recon", "kl", "nll"):
            expected = [r["eval"][name]["value"] for r in records]
            assert [value for _, value in tags[f"eval/{name}"]] == pytest.approx(expected, rel=1e-6)


def test_a_resumed_comparison_appends_each_epoch_once(pair: tuple, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    ae, data = pair
    options = TINY | {"epochs": 3}
    epochs = loop.Run.train_epoch
    calls = {"n": 0}

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # the second round of epochs, half-way through
            raise KeyboardInterrupt
        return epochs(self, *args)

    monkeypatch.setattr(loop.Run, "train_epoch", interrupted)
    before: list[dict[str, Any]] = []
    with pytest.raises(KeyboardInterrupt):
        fxvae.compare(ae, data, out=tmp_path, callbacks=[before.append], **options)
    monkeypatch.setattr(loop.Run, "train_epoch", epochs)
    after: list[dict[str, Any]] = []
    fxvae.compare(ae, data, out=tmp_path, resume=True, callbacks=[after.append], **options)
    assert before + after == epoch_lines(tmp_path)
    # Stopped with warm at epoch 2 and scratch at 1: the runs take turns from there.
    assert [(r["start"], r["epoch"]) for r in after] == [("warm", 3), ("scratch", 2), ("scratch", 3)]
    for run, tags in event_scalars(tmp_path).items():
        assert [step for step, _ in tags["eval/neg_elbo"]] == [0, 1, 2, 3], run


def test_without_tensorboard_one_warning_says_how_to_install_it_and_training_goes_on(
    pair: tuple, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails, as where not installed
    ae, data = pair
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fxvae.compare(ae, data, out=tmp_path, **TINY)
    said = [str(w.message) for w in caught if "TensorBoard" in str(w.message)]
    assert len(said) == 1
    assert "tensorboard is not installed (pip install 'fxvae[tensorboard]')" in said[0]
    assert [len(run.points) for run in result.runs] == [3, 3]
    assert not (tmp_path / tracking.FOLDER).exists()


def test_tensorboard_false_writes_no_event_files_and_says_nothing(pair: tuple, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    ae, data = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "the held-out data is a seeded")
        fxvae.compare(ae, data, out=tmp_path, tensorboard=False, **TINY)
    assert not (tmp_path / tracking.FOLDER).exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tensorboard": True}, r"tensorboard=True writes event files under out=<folder>: pass out"),
        ({"tensorboard": "yes"}, r"tensorboard='yes' must be True, False or None"),
        ({"callbacks": print}, r"callbacks=<built-in function print> must be a list of callables: callbacks=\[print\]"),
        ({"callbacks": [print, 3]}, r"callbacks\[1\]=3 is not callable"),
    ],
)
def test_bad_tracking_arguments_are_refused_before_any_work(pair: tuple, given: dict, message: str) -> None:
    ae, data = pair
    with pytest.raises(InputError, match=message):
        fxvae.compare(ae, data, **(TINY | given))


def test_tensorboard_true_without_tensorboard_is_refused_before_any_work(
    pair: tuple, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    ae, data = pair
    with pytest.raises(InputError, match=r"tensorboard=True needs TensorBoard .*: pip install 'fxvae\[tensorboard\]'"):
        fxvae.compare(ae, data, out=tmp_path, tensorboard=True, **TINY)
    assert not (tmp_path / "metrics.jsonl").exists()


class FakeWriter:
    """Stands in for ``SummaryWriter``: what each run's writer was given, and whether it was closed."""

    made: ClassVar[list[FakeWriter]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, global_step, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_callback_that_raises_names_itself_keeps_the_finished_epochs_and_resumes(
    pair: tuple, tmp_path: Path, monkeypatch
) -> None:
    ae, data = pair
    FakeWriter.made = []
    monkeypatch.setattr(tracking, "_summary_writer", lambda: FakeWriter)

    def log(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise ConnectionError("the tracking server is down")

    expected = (
        r"^callbacks\[0\] \(.*log at .*test_compare_tracking.py:\d+\) raised ConnectionError: the tracking server "
        r"is down \(on the record of warm seed 0 epoch 1\)\. Every finished epoch is kept in .*metrics.jsonl.* "
        r"continue with resume=True$"
    )
    with pytest.raises(fxvae.CallbackError, match=expected) as caught:
        fxvae.compare(ae, data, out=tmp_path, tensorboard=True, callbacks=[log], **TINY)
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert [(r["start"], r["epoch"]) for r in epoch_lines(tmp_path)] == [("warm", 0), ("scratch", 0), ("warm", 1)]
    # The writers are closed however the comparison ends; the epoch whose callback raised is in its event file.
    assert [Path(w.log_dir).relative_to(tmp_path).as_posix() for w in FakeWriter.made] == [
        "tensorboard/warm/seed0",
        "tensorboard/scratch/seed0",
    ]
    assert all(w.closed for w in FakeWriter.made)
    assert sorted({step for tag, step, _ in FakeWriter.made[0].scalars if tag == "eval/neg_elbo"}) == [0, 1]
    resumed = fxvae.compare(ae, data, out=tmp_path, resume=True, **TINY)
    assert [[p.epoch for p in run.points] for run in resumed.runs] == [[0, 1, 2], [0, 1, 2]]


def test_only_the_writing_rank_tracks(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    with tracking.Tracker(tmp_path, tensorboard=None, callbacks=[got.append], writes=False) as tracker:
        tracker.epoch({"type": "epoch", "start": "warm", "seed": 0, "epoch": 0, "train_loss": None, "eval": {}})
    assert got == [] and not (tmp_path / tracking.FOLDER).exists()
    with pytest.raises(InputError, match="is not callable"):
        tracking.Tracker(tmp_path, callbacks=[3], writes=False)  # every rank refuses alike


def _rank(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, 2):
        torch.manual_seed(0)
        ae = mlp_ae()
        got: list[dict[str, Any]] = []
        data = torch.rand(100, 16, generator=torch.Generator().manual_seed(1))
        options = TINY | {"epochs": 1}
        fxvae.compare(ae, data, out=Path(folder) / "out", callbacks=[got.append], **options)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(got))


def test_under_ddp_rank_0_alone_tracks(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == epoch_lines(tmp_path / "out") and len(got[0]) == 2 * 2 and got[1] == []
    curves = event_scalars(tmp_path / "out")
    assert sorted(curves) == ["scratch/seed0", "warm/seed0"]
    assert all([step for step, _ in tags["eval/neg_elbo"]] == [0, 1] for tags in curves.values())
    assert len(list((tmp_path / "out" / tracking.FOLDER / "warm" / "seed0").iterdir())) == 1  # one writer


def test_scalars_key_each_number_by_run_and_tag() -> None:
    record = {
        "type": "epoch",
        "start": "calibrated",
        "seed": 2,
        "epoch": 0,
        "step": 0,
        "train_loss": None,
        "seconds": 0.0,
        "eval": {"kind": "vq", "k": 1, "recon": {"value": 3.5, "stderr": 0.1}, "perplexity": 40.0, "codes_used": 0.5},
    }
    assert fxvae.study.scalars(record) == {
        "calibrated/seed2/seconds": 0.0,
        "calibrated/seed2/eval/recon": 3.5,
        "calibrated/seed2/eval/perplexity": 40.0,
        "calibrated/seed2/eval/codes_used": 0.5,
    }


def _cli(pair: tuple, tmp_path: Path, *options: str) -> Any:
    from click.testing import CliRunner

    from fxvae.cli.app import app

    ae, data = pair
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    torch.save(data, tmp_path / "data.pt")
    args = ["compare", "fxvae.examples:mlp_ae", "--checkpoint", str(tmp_path / "ae.pt"), "--data"]
    args += [str(tmp_path / "data.pt"), "--quick", "--k", "1", "--final-k", "2", "--starts", "warm,scratch"]
    args += ["--density", "gaussian", "--likelihood", "bernoulli", "--out", str(tmp_path / "r"), *options]
    return CliRunner().invoke(app, args)


def test_the_command_line_takes_no_tensorboard(pair: tuple, tmp_path: Path) -> None:
    result = _cli(pair, tmp_path, "--no-tensorboard")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "r" / "metrics.jsonl").exists() and not (tmp_path / "r" / tracking.FOLDER).exists()


def test_the_command_line_without_tensorboard_warns_in_one_line_or_refuses_tensorboard(
    pair: tuple, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    refused = _cli(pair, tmp_path, "--tensorboard")
    assert refused.exit_code == 2 and "pip install 'fxvae[tensorboard]'" in refused.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
    result = _cli(pair, tmp_path)
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "TensorBoard" in line]
    assert said == [
        "warning: no TensorBoard curves: tensorboard is not installed (pip install 'fxvae[tensorboard]'); the "
        "curves are in metrics.jsonl. Pass tensorboard=False (--no-tensorboard) to silence this"
    ]
