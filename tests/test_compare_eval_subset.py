"""fxvae.compare's per-epoch measurement on large held-out data: ``eval_samples`` (a seeded subset, the same for
every start and seed; the final measurement on all of it) and ``eval_every`` (measured every few epochs), and
what reads the curves with gaps: epochs to within reach, the verdict, the report, resume and the budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import fxvae
from fxvae.cli.app import app
from fxvae.errors import InputError
from fxvae.examples import mlp_ae
from fxvae.study import compare as compare_module
from fxvae.study import ledger, loop
from tests.report_records import evaluation

HELD_OUT = 60
TINY: dict[str, Any] = {
    "starts": ("scratch", "warm"),
    "epochs": 2,
    "k": 2,
    "final_k": 4,
    "likelihood": "bernoulli",
    "density": ("gaussian",),
    "progress": False,
}


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """An untrained 16-wide MLP AE, 100 training samples and :data:`HELD_OUT` held-out ones (given apart, so
    that no split of the AE's own data is warned about)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return mlp_ae(), torch.rand(100, 16, generator=generator), torch.rand(HELD_OUT, 16, generator=generator)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, torch.Tensor]]:
    """Every measurement compare makes of a run: (k, the held-out samples it measured, in order)."""
    seen: list[tuple[int, torch.Tensor]] = []
    measure = compare_module.evaluate

    def evaluate(model, data, *, k: int, **kwargs):
        seen.append((k, torch.cat([batch[0] for batch in data.batches()])))
        return measure(model, data, k=k, **kwargs)

    monkeypatch.setattr(compare_module, "evaluate", evaluate)
    return seen


# --- eval_samples: one seeded subset per comparison ----------------------------------------------------------


def test_every_start_and_seed_is_measured_each_epoch_on_the_same_eval_samples(tiny, monkeypatch) -> None:
    ae, train, test = tiny
    seen = _spy(monkeypatch)
    result = fxvae.compare(ae, train, test, seeds=2, eval_samples=25, **TINY)
    per_epoch = [rows for k, rows in seen if k == TINY["k"]]
    assert len(per_epoch) == 2 * 2 * 3  # starts x seeds x epochs 0, 1, 2
    assert all(torch.equal(rows, per_epoch[0]) for rows in per_epoch)
    assert len(per_epoch[0]) == 25 and len(torch.unique(per_epoch[0], dim=0)) == 25
    assert {p.evaluation.n for r in result.runs for p in r.points} == {25}


def test_the_subset_is_held_out_data_in_data_order_whatever_the_global_random_state(tiny, monkeypatch) -> None:
    ae, train, test = tiny
    seen = _spy(monkeypatch)
    subsets = []
    for state in (1, 2):
        torch.manual_seed(state)
        fxvae.compare(ae, train, test, eval_samples=25, **{**TINY, "epochs": 1})
        subsets.append(next(rows for k, rows in seen if k == TINY["k"]))
        seen.clear()
    first, again = subsets
    assert torch.equal(first, again)
    rows = [next(i for i in range(HELD_OUT) if torch.equal(test[i], row)) for row in first]
    assert rows == sorted(rows)


def test_the_final_measurement_uses_every_held_out_sample(tiny, monkeypatch) -> None:
    ae, train, test = tiny
    seen = _spy(monkeypatch)
    result = fxvae.compare(ae, train, test, eval_samples=25, **TINY)
    finals = [rows for k, rows in seen if k == TINY["final_k"]]
    assert len(finals) == 2 and all(torch.equal(rows, test) for rows in finals)
    assert {r.final.n for r in result.runs} == {HELD_OUT}


def test_eval_samples_as_many_as_the_held_out_data_measure_all_of_it(tiny) -> None:
    ae, train, test = tiny
    every = fxvae.compare(ae, train, test, **TINY)
    counted = fxvae.compare(ae, train, test, eval_samples=HELD_OUT, **TINY)
    for a, b in zip(every.runs, counted.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]


def test_more_eval_samples_than_held_out_samples_are_refused_naming_both(tiny) -> None:
    ae, train, test = tiny
    with pytest.raises(InputError, match=rf"eval_samples=61 is more than the {HELD_OUT} held-out samples"):
        fxvae.compare(ae, train, test, eval_samples=HELD_OUT + 1, **TINY)


def test_the_records_and_report_say_how_many_samples_each_epoch_was_measured_on(tiny, tmp_path: Path) -> None:
    ae, train, test = tiny
    fxvae.compare(ae, train, test, eval_samples=25, eval_every=2, out=tmp_path, **TINY)
    config = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert config["options"]["eval_samples"] == 25 and config["options"]["eval_every"] == 2
    assert config["data"]["test"] == HELD_OUT
    report = (tmp_path / "report.md").read_text()
    assert f"Measured every 2 epochs on 25 of the {HELD_OUT} held-out samples" in report
    assert f"at the end on all {HELD_OUT} with k = 4" in report


# --- eval_every: measured epochs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "every", "measured"),
    [(4, 2, [0, 2, 4]), (5, 2, [0, 2, 4, 5]), (3, 5, [0, 3]), (3, 1, [0, 1, 2, 3])],
)
def test_eval_every_measures_epoch_0_every_eval_every_th_and_the_last(tiny, epochs, every, measured) -> None:
    ae, train, test = tiny
    result = fxvae.compare(ae, train, test, **{**TINY, "epochs": epochs, "eval_every": every})
    assert all([p.epoch for p in run.points] == measured for run in result.runs)
    assert all(run.points[-1].step == epochs * 2 for run in result.runs)  # 100 samples in batches of 64


def test_a_resumed_comparison_measures_the_same_epochs_as_an_unbroken_one(tiny, tmp_path: Path, monkeypatch) -> None:
    ae, train, test = tiny
    options = {**TINY, "epochs": 4, "eval_every": 2}
    whole = fxvae.compare(ae, train, test, **options)
    epochs = loop.Run.train_epoch
    calls = {"n": 0}

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # after every run's epoch 1, which is not measured
            raise KeyboardInterrupt
        return epochs(self, *args)

    monkeypatch.setattr(loop.Run, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fxvae.compare(ae, train, test, out=tmp_path, **options)
    assert [[p.epoch for p in r.points] for r in fxvae.study.read(tmp_path).runs] == [[0], [0]]
    monkeypatch.setattr(loop.Run, "train_epoch", epochs)
    resumed = fxvae.compare(ae, train, test, out=tmp_path, resume=True, **options)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert [p.epoch for p in b.points] == [0, 2, 4]
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]
        assert a.final == b.final


def _fake_time(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock that only work moves: an epoch of training takes 1 s, a measurement of all the held-out samples
    k s (of a subset, its share of that)."""
    now = [0.0]
    monkeypatch.setattr(compare_module, "_clock", lambda: now[0])
    train_epoch, measure = loop.Run.train_epoch, compare_module.evaluate

    def train(self, *args):
        now[0] += 1.0
        return train_epoch(self, *args)

    def evaluate(model, data, *, k: int, **kwargs):
        now[0] += k * len(data) / HELD_OUT
        return measure(model, data, k=k, **kwargs)

    monkeypatch.setattr(loop.Run, "train_epoch", train)
    monkeypatch.setattr(compare_module, "evaluate", evaluate)
    return now


def test_a_budget_measures_the_epoch_it_stops_at(tiny, tmp_path: Path, monkeypatch) -> None:
    ae, train, test = tiny
    _fake_time(monkeypatch)
    options = {**TINY, "epochs": 50, "k": 1, "final_k": 2, "eval_every": 7, "max_minutes": 1.0}
    result = fxvae.compare(ae, train, test, out=tmp_path, **options)
    records = ledger.records(tmp_path / ledger.FILE)
    stopped = next(r["epochs"] for r in records if r["type"] == "stopped")
    assert 7 < stopped < 50 and stopped % 7 != 0  # the budget fell between two measured epochs
    for run in result.runs:
        assert [p.epoch for p in run.points] == [*range(0, stopped, 7), stopped]
    assert {r["epoch"] for r in records if r["type"] == "final"} == {stopped}


def test_the_budget_keeps_time_for_a_final_measurement_of_every_held_out_sample(tiny, monkeypatch) -> None:
    ae, train, test = tiny
    now = _fake_time(monkeypatch)
    # Each epoch measured on 6 samples (0.1 s), the end on all 60 at final_k = 10 (10 s per run): the budget must
    # see the end's cost on the whole held-out set, not on the subset.
    options = {**TINY, "epochs": 200, "k": 1, "final_k": 10, "eval_samples": 6, "max_minutes": 1.0}
    result = fxvae.compare(ae, train, test, **options)
    assert now[0] <= 60.0
    assert result.run("warm", 0).points[-1].epoch >= 5  # the budget was used, not given up on


# --- what reads the curves: epochs to within reach, the verdict, the report ------------------------------------


def _records(curves: dict[str, list[float]], epochs: list[int], finals: dict[str, float], **options: Any) -> Any:
    """One seed per start, measured at ``epochs`` with the values of ``curves``, then a final line."""
    config = {"type": "config", "model": "AE", "data": {"test": 1000}}
    config["options"] = {"starts": list(curves), "k": 8, "final_k": 100, **options}
    lines: list[dict[str, Any]] = [config]
    for start, values in curves.items():
        for epoch, value in zip(epochs, values, strict=True):
            lines.append(
                {
                    "type": "epoch",
                    "start": start,
                    "seed": 0,
                    "epoch": epoch,
                    "step": 10 * epoch,
                    "train_loss": None,
                    "seconds": float(epoch),
                    "eval": evaluation(value),
                }
            )
        lines.append(
            {"type": "final", "start": start, "seed": 0, "epoch": epochs[-1], "eval": evaluation(finals[start])}
        )
    return ledger.comparison_of(lines)


def test_epochs_to_within_are_the_first_measured_epoch_within_reach() -> None:
    curves = {"scratch": [40.0, 30.0, 26.0, 24.5], "warm": [30.0, 24.8, 24.6, 24.4]}
    result = _records(curves, [0, 3, 6, 8], {"scratch": 24.0, "warm": 24.2}, eval_every=3)
    assert result.epochs_to_within() == {"scratch": [8], "warm": [3]}
    assert any("warm gets within 1 nat of scratch's final -ELBO after 3.0 epochs" in line for line in result.verdict())


@pytest.mark.parametrize(("last", "improving"), [(24.5, True), (24.75, False)])
def test_still_improving_is_the_drop_per_epoch_between_the_last_two_measurements(last: float, improving) -> None:
    # 0.5 nats over 4 epochs is 0.125 per epoch (still improving); 0.25 over 4 is 0.0625 (not).
    result = _records({"scratch": [40.0, 25.0, last]}, [0, 4, 8], {"scratch": last}, eval_every=4)
    said = [line for line in result.verdict() if "still improving" in line]
    assert bool(said) is improving
    if improving:
        assert "0.12 nats per epoch between its last two measurements" in said[0]


def test_the_noise_of_per_epoch_values_names_the_subset_they_were_measured_on() -> None:
    result = _records(
        {"scratch": [40.0, 24.0], "warm": [90.0, 26.0]}, [0, 1], {"scratch": 24.0, "warm": 23.0}, eval_samples=200
    )
    assert any(
        "per-epoch measurements (k = 8, on 200 of the 1000 held-out samples) lie up to 3.00 nats" in line
        for line in result.verdict()
    )


def test_the_report_says_epochs_to_within_reach_count_measured_epochs() -> None:
    curves = {"scratch": [40.0, 30.0, 24.5], "warm": [30.0, 24.8, 24.4]}
    text = _records(curves, [0, 5, 10], {"scratch": 24.0, "warm": 24.2}, eval_every=5).to_markdown()
    assert "With a measurement every 5 epochs, the epochs to within reach are the first measured epoch" in text
    assert "up to 4 epochs earlier" in text


def test_the_curves_are_drawn_at_the_epochs_every_seed_measured() -> None:
    pytest.importorskip("matplotlib")
    from fxvae.study.plots import curves_figure

    lines = [{"type": "config", "model": "AE", "options": {"starts": ["scratch"], "k": 8, "final_k": 100}}]
    # Seed 1 has one more point inside its curve (the epoch a budget stopped at, then resumed).
    for seed, epochs in ((0, [0, 4, 8]), (1, [0, 3, 4, 8])):
        for epoch in epochs:
            record = {"start": "scratch", "seed": seed, "epoch": epoch, "step": epoch, "train_loss": None}
            lines.append({"type": "epoch", **record, "seconds": 0.0, "eval": evaluation(40.0 - epoch)})
    figure = curves_figure(ledger.comparison_of(lines))
    line = figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [0, 4, 8]
    assert list(line.get_ydata()) == [40.0, 36.0, 32.0]  # each the mean of the seeds at that epoch


# --- the options -----------------------------------------------------------------------------------------------


def test_the_command_line_has_eval_samples_and_eval_every() -> None:
    result = CliRunner().invoke(app, ["compare", "--help"])
    assert result.exit_code == 0
    assert "--eval-samples" in result.stdout and "--eval-every" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eval_samples": 0}, "eval_samples=0 must be a positive whole number"),
        ({"eval_samples": -5}, "eval_samples=-5 must be a positive whole number"),
        ({"eval_samples": 2.5}, "eval_samples=2.5 must be a positive whole number"),
        ({"eval_samples": True}, "eval_samples=True must be a positive whole number"),
        ({"eval_every": 0}, "eval_every=0 must be a positive whole number"),
        ({"eval_every": None}, "eval_every=None must be a positive whole number"),
    ],
)
def test_bad_eval_samples_and_eval_every_are_refused(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        fxvae.study.CompareOptions(**options)


def test_the_command_line_refuses_a_bad_eval_every_in_one_line(tmp_path: Path) -> None:
    args = ["compare", "m:f", "--checkpoint", "ae.pt", "--data", "d.npy", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--eval-every", "0"])
    assert result.exit_code == 2
    assert "--eval-every 0 must be a positive whole number" in result.stderr
