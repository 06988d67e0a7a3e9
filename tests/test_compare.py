"""fxvae.compare: the starts, the one loop, the held-out split, the records and report, stopping and resuming."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

import fxvae
from fxvae.errors import InputError
from fxvae.examples import mlp_ae
from fxvae.study import compare as compare_module
from fxvae.study import loop
from fxvae.study.starts import begin, reinitialised
from tests.digits import DigitsAE
from tests.snapshot import assert_unchanged, snapshot
from tests.zoo import BY_NAME, build

TINY = {"epochs": 2, "k": 2, "final_k": 4, "likelihood": "bernoulli", "progress": False}
# These tests hold out a split of the AE's own training data on purpose (tests/test_compare_holdout.py checks
# the warning that says so).
pytestmark = pytest.mark.filterwarnings("ignore:the held-out data is a seeded")


def test_every_start_is_measured_before_any_step_and_after_every_epoch(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, starts=("scratch", "warm", "calibrated", "ae"), **TINY)
    assert result.starts == ["scratch", "warm", "calibrated", "ae"]
    for run in result.runs:
        assert [p.epoch for p in run.points] == [0, 1, 2]
        assert [p.step for p in run.points] == [0, 6, 12]  # 360 training samples in batches of 64
        assert run.points[0].train_loss is None and run.points[1].train_loss is not None
        assert run.final is not None and run.final.k == (4 if run.is_vae else 1)
    assert result.run("ae", 0).final.measured == ("recon",)


def test_the_warm_start_at_epoch_0_is_the_plain_conversion_measured_by_evaluate(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, starts=("warm", "scratch"), **TINY)
    train, test = fxvae.study.Samples(data).split(0.1, seed=0)
    vae, _ = fxvae.convert(ae, train.batch(torch.arange(64)))
    expected = fxvae.evaluate(vae, test, likelihood="bernoulli", k=2, seed=0)
    assert result.run("warm", 0).points[0].evaluation == expected


def test_the_held_out_split_is_seeded_the_same_for_every_seed_and_never_trained_on(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, starts=("warm", "scratch"), seeds=2, holdout=0.25, **TINY)
    assert result.config["data"] == {"train": 300, "test": 100, "split": result.config["data"]["split"]}
    assert "held out" in result.config["data"]["split"]
    assert {r.points[0].evaluation.n for r in result.runs} == {100}
    given = fxvae.compare(ae, data[:300], data[300:], starts=("warm", "scratch"), **TINY)
    assert given.config["data"]["split"] == "held-out data given separately"


def test_the_calibrated_start_is_calibrated_on_the_training_split_alone(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    seen: list[int] = []
    calibrate = fxvae.surgery.calibration._calibrate

    def spy(vae, calibration, *args):
        seen.append(sum(len(b[0]) for b in fxvae.io.data.batches(calibration, 1)))
        return calibrate(vae, calibration, *args)

    monkeypatch.setattr(fxvae.surgery.calibration, "_calibrate", spy)
    fxvae.compare(ae, data, starts=("calibrated", "scratch"), **TINY)
    assert seen == [360]


def test_runs_of_a_seed_share_batches_and_noise_and_repeat_exactly(trained: tuple) -> None:
    ae, data = trained
    first = fxvae.compare(ae, data, starts=("warm", "scratch"), seeds=2, **TINY)
    again = fxvae.compare(ae, data, starts=("warm", "scratch"), seeds=2, **TINY)
    for a, b in zip(first.runs, again.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]
    seed0, seed1 = first.run("warm", 0), first.run("warm", 1)
    assert seed0.points[1].evaluation != seed1.points[1].evaluation
    assert [b.tolist() for b in loop.batch_order(10, 4, seed=3, epoch=2)] == [
        b.tolist() for b in loop.batch_order(10, 4, seed=3, epoch=2)
    ]


def test_compare_leaves_the_autoencoder_and_the_thread_count_as_they_were(trained: tuple) -> None:
    ae, data = trained
    before, threads = snapshot(ae), torch.get_num_threads()
    fxvae.compare(ae, data, starts=("warm", "scratch", "ae"), threads=threads + 1, **TINY)
    assert_unchanged(ae, before)
    assert torch.get_num_threads() == threads


def test_scratch_redraws_every_parameter_with_each_modules_reset_under_the_seed(trained: tuple) -> None:
    ae, _ = trained
    fresh, same, other = reinitialised(ae, 0), reinitialised(ae, 0), reinitialised(ae, 1)
    for (name, p), q, r, trained_p in zip(
        fresh.named_parameters(), same.parameters(), other.parameters(), ae.parameters(), strict=True
    ):
        assert not torch.equal(p, trained_p), name
        assert torch.equal(p, q), name
        assert not torch.equal(p, r), name


def test_scratch_resets_a_parametrised_layer_through_its_parametrisation() -> None:
    model = build(BY_NAME["weight_norm_latent"], seed=3)
    fresh = reinitialised(model, 0)
    layer, trained_layer = fresh.get_submodule("enc.2"), model.get_submodule("enc.2")
    assert not torch.equal(layer.weight, trained_layer.weight)
    assert torch.nn.utils.parametrize.is_parametrized(layer)


def test_scratch_refuses_a_module_without_reset_parameters_and_takes_a_factory() -> None:
    entry = BY_NAME["functional_linear"]
    model = build(entry, seed=3)
    data = entry.inputs(60)[0]
    options = TINY | {"likelihood": "gaussian", "sigma": 1.0}
    with pytest.raises(
        fxvae.InputError, match=r"the model itself \(FunctionalLinear\) owns parameters \(w1, b1, .*\) .* pass scratch="
    ):
        fxvae.compare(model, data, starts=("scratch", "warm"), **options)
    result = fxvae.compare(model, data, starts=("scratch", "warm"), scratch=entry.build, **options)
    assert len(result.runs) == 2


def test_a_fold_option_that_is_not_a_bool_is_refused() -> None:
    with pytest.raises(InputError, match=r"fold='no' must be True or False"):
        fxvae.study.CompareOptions(fold="no")


@pytest.mark.filterwarnings("ignore:the reconstruction is further from the data")
def test_the_optimal_sigma_is_fitted_once_to_the_ae_and_shared_by_every_start(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, starts=("warm", "scratch", "ae"), **TINY | {"likelihood": "gaussian"})
    assert "optimal" in result.config["likelihood"]
    scales = {p.evaluation.scale for r in result.runs for p in r.points}
    assert len(scales) == 1
    with torch.no_grad():
        train, _ = fxvae.study.Samples(data).split(0.1, seed=0)
        x = train.batch(torch.arange(len(train)))[0]
        rmse = (ae(x) - x).pow(2).mean().sqrt().item()
    assert scales.pop() == pytest.approx(rmse, rel=1e-4)


def test_a_conditional_autoencoder_compares_on_data_with_labels() -> None:
    entry = BY_NAME["conditional"]
    x, label = entry.inputs(120)
    options = TINY | {"likelihood": "gaussian", "sigma": 1.0}
    result = fxvae.compare(build(entry, seed=3), (x, label), starts=("warm", "scratch"), **options)
    assert all(math.isfinite(p.objective) for r in result.runs for p in r.points)


def test_out_writes_metrics_as_they_happen_a_report_and_its_pictures(trained: tuple, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ae, data = trained
    fxvae.compare(ae, data, out=tmp_path, image_shape=(8, 8), **TINY)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "config"
    assert sum(line["type"] == "epoch" for line in lines) == 4 * 3  # ae, scratch, warm, calibrated
    report = (tmp_path / "report.md").read_text()
    for start in ("ae", "scratch", "warm", "calibrated"):
        assert f"| {start} |" in report
    for picture in ("curves", "reconstructions", "samples", "kl_per_dim"):
        assert (tmp_path / f"{picture}.png").stat().st_size > 0
        assert f"({picture}.png)" in report
    assert "nan" not in report


def test_the_report_is_rebuilt_from_metrics_jsonl_alone(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, out=tmp_path, **TINY)
    (tmp_path / "checkpoints").rename(tmp_path / "gone")
    again = fxvae.study.read(tmp_path / "metrics.jsonl")
    assert again.to_markdown() == result.to_markdown()
    assert again.table() == result.table()


def test_a_stopped_comparison_resumes_to_the_same_numbers(trained: tuple, tmp_path: Path, monkeypatch) -> None:
    ae, data = trained
    options = TINY | {"starts": ("warm", "scratch"), "epochs": 3}
    whole = fxvae.compare(ae, data, **options)
    epochs = loop.Run.train_epoch
    calls = {"n": 0}

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # the second round of epochs, half-way through
            raise KeyboardInterrupt
        return epochs(self, *args)

    monkeypatch.setattr(loop.Run, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fxvae.compare(ae, data, out=tmp_path, **options)
    kept = fxvae.study.read(tmp_path)
    assert [len(r.points) for r in kept.runs] == [3, 2]
    monkeypatch.setattr(loop.Run, "train_epoch", epochs)
    resumed = fxvae.compare(ae, data, out=tmp_path, resume=True, **options)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]
        assert a.final == b.final


def test_resuming_with_other_settings_is_refused_naming_them(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("warm", "scratch"), out=tmp_path, **TINY)
    with pytest.raises(fxvae.InputError, match=r"other settings: lr \(0.001 then, 0.01 now\)"):
        fxvae.compare(ae, data, starts=("warm", "scratch"), out=tmp_path, resume=True, lr=0.01, **TINY)


def _fake_time(monkeypatch) -> list[float]:
    """A clock in seconds that only work moves: an epoch of training takes 1 s, a measurement k seconds."""
    now = [0.0]
    monkeypatch.setattr(fxvae.study.compare, "_clock", lambda: now[0])
    train_epoch, measure = loop.Run.train_epoch, fxvae.study.compare.evaluate

    def train(self, *args):
        now[0] += 1.0
        return train_epoch(self, *args)

    def evaluate(*args, k: int, **kwargs):
        now[0] += k
        return measure(*args, k=k, **kwargs)

    monkeypatch.setattr(loop.Run, "train_epoch", train)
    monkeypatch.setattr(fxvae.study.compare, "evaluate", evaluate)
    return now


def test_a_budget_ends_every_start_at_the_same_epoch(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    _fake_time(monkeypatch)
    result = fxvae.compare(ae, data, starts=("warm", "scratch", "calibrated"), max_minutes=1.0, **TINY | {"epochs": 50})
    done = {r.points[-1].epoch for r in result.runs}
    assert len(done) == 1 and 0 < done.pop() < 50
    assert "budget" in result.stopped


def test_the_budget_keeps_time_for_the_final_measurement(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    now = _fake_time(monkeypatch)
    # Measured at k = 1 after each epoch (1 s), at final_k = 10 at the end (10 s per run): the end must fit too.
    options = TINY | {"starts": ("warm", "scratch"), "epochs": 50, "k": 1, "final_k": 10, "max_minutes": 1.0}
    result = fxvae.compare(ae, data, **options)
    assert now[0] <= 60.0
    assert result.run("warm", 0).points[-1].epoch >= 5  # the budget was used, not given up on


def test_epochs_to_within_one_nat_are_counted_against_scratchs_final(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data, starts=("scratch", "calibrated"), **TINY)
    target = result.run("scratch", 0).final_objective + 1.0
    for start in ("calibrated", "scratch"):
        expected = next(p.epoch for p in result.run(start, 0).points if p.objective <= target)
        assert result.epochs_to_within()[start] == [expected]
    assert any("scratch's final held-out -ELBO" in line for line in result.verdict())


def test_learning_rate_schedules_and_warm_ups() -> None:
    options = fxvae.study.CompareOptions(schedule="one-cycle")
    factors = [loop.lr_factor(s, 100, options, warmup=0) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 25) and max(factors) == pytest.approx(1.0, abs=1e-3)
    assert factors[-1] < 0.01
    constant = fxvae.study.CompareOptions(schedule="constant")
    assert [loop.lr_factor(s, 100, constant, warmup=10) for s in (0, 4, 9, 50)] == pytest.approx([0.1, 0.5, 1, 1])
    assert loop.warmup_steps(constant, steps_per_epoch=23) == 23  # one epoch, unless given
    assert loop.warmup_steps(fxvae.study.CompareOptions(lr_warmup=0), steps_per_epoch=23) == 0


def test_kl_warm_up_and_free_bits_reach_the_training_loss(trained: tuple) -> None:
    # Their values against a hand computation are in tests/test_loop.py; this checks that compare passes them on.
    ae, data = trained
    options = {**TINY, "epochs": 1, "starts": ("warm",)}

    def first_epochs_loss(**kl_options: float) -> float:
        return fxvae.compare(ae, data, **options, **kl_options).run("warm", 0).points[1].train_loss

    # A warm-up longer than the run keeps the KL's weight near 0; a floor of 100 nats lifts every dimension's KL.
    assert first_epochs_loss(kl_warmup=100_000) < first_epochs_loss() < first_epochs_loss(free_bits=100.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"starts": ("warm", "fancy")}, "must be distinct names among"),
        ({"starts": ("ae",)}, "has no VAE to compare"),
        ({"epochs": 0}, "epochs=0 must be a positive whole number"),
        ({"holdout": 1.5}, "holdout=1.5 must be a fraction"),
        ({"resume": True}, "resume=True continues the comparison in out"),
        ({"likelihood": "bernoulli-probs"}, "needs probabilities"),
    ],
)
def test_bad_options_are_input_errors_before_any_work(trained: tuple, options: dict, message: str) -> None:
    ae, data = trained
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.compare(ae, data, **{**TINY, **options})


def test_options_as_one_object_run_the_same_comparison_as_the_keywords(trained: tuple) -> None:
    ae, data = trained
    by_keywords = fxvae.compare(ae, data, starts=("warm", "scratch"), **TINY)
    options = fxvae.study.CompareOptions(starts=("warm", "scratch"), epochs=2, k=2, final_k=4, likelihood="bernoulli")
    by_options = fxvae.compare(ae, data, options=options, progress=False)
    assert by_options.config["options"] == by_keywords.config["options"]
    for a, b in zip(by_keywords.runs, by_options.runs, strict=True):
        assert (a.start, a.seed) == (b.start, b.seed)
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]
        assert a.final == b.final


def test_keywords_beside_options_are_refused_naming_them_before_any_work(trained: tuple) -> None:
    ae, data = trained
    options = fxvae.study.CompareOptions(epochs=2)
    message = r"compare got options= and lr=0.01, seeds=3 beside it: .*dataclasses.replace\(options, lr=0.01, seeds=3\)"
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.compare(ae, data, options=options, seeds=3, lr=0.01, progress=False)
    with pytest.raises(fxvae.InputError, match=r"must be a fxvae\.study\.CompareOptions"):
        fxvae.compare(ae, data, options={"epochs": 2}, progress=False)


def test_keywords_at_their_defaults_leave_the_options_as_given() -> None:
    options = fxvae.study.CompareOptions(epochs=2, levels=(4, 4))
    defaults = {name: getattr(fxvae.study.CompareOptions(), name) for name in compare_module.OPTION_NAMES}
    # a list equal to a tuple default is that default; starts=None is how compare's signature leaves them out
    keywords = {**defaults, "starts": None, "levels": [8, 5, 5, 5]}
    assert compare_module._options(options, keywords) is options


def test_compare_takes_every_option_as_a_keyword_with_its_default() -> None:
    parameters = inspect.signature(fxvae.compare).parameters
    fields = {f.name: f.default for f in dataclasses.fields(fxvae.study.CompareOptions)}
    assert {name: parameters[name].default for name in fields} == fields
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in (*fields, "options"))


def test_the_fold_option_reaches_the_gaussian_config_and_no_other() -> None:
    assert fxvae.study.CompareOptions(fold=False).latent_config().fold is False
    assert fxvae.study.CompareOptions().latent_config().fold is True
    assert not hasattr(fxvae.study.CompareOptions(latent="vq", fold=False).latent_config(), "fold")


@pytest.mark.filterwarnings("ignore:the reconstruction is further from the data")
@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
def test_the_calibrated_start_folds_its_map_as_the_fold_option_says(fold: bool) -> None:
    entry = BY_NAME["conv_flat_linear"]
    ae, data = build(entry), entry.inputs(200)[0]
    options = fxvae.study.CompareOptions(fold=fold)
    begun = begin("calibrated", ae, (data[:8],), fxvae.study.Samples(data), options, 0, None)
    recipe = fxvae.conversion(begun.model)
    assert recipe.options.latent.fold is fold
    folded = ("mu_head", "dec.0") if fold else (None, None)
    assert (recipe.calibration.folded_mu, recipe.calibration.folded_decoder) == folded


@pytest.mark.filterwarnings("ignore:the reconstruction is further from the data")
@pytest.mark.parametrize("start", ["auto", -3.0], ids=["auto", "fixed"])
def test_the_log_sigma_option_starts_the_calibrated_start_alone(start: float | str) -> None:
    entry = BY_NAME["conv_flat_linear"]
    ae, data = build(entry), entry.inputs(200)[0]
    options = fxvae.study.CompareOptions(log_sigma_init=start)
    biases = {}
    for name in ("calibrated", "warm", "scratch"):
        begun = begin(name, ae, (data[:8],), fxvae.study.Samples(data), options, 0, None)
        recipe = fxvae.conversion(begun.model)
        biases[name] = begun.model.get_submodule(recipe.log_sigma_head).bias.detach()
    assert torch.equal(biases["warm"], torch.zeros_like(biases["warm"]))
    assert torch.equal(biases["scratch"], torch.zeros_like(biases["scratch"]))
    if start == "auto":  # from the decoder's sensitivity: below the prior's scale where the decoder reads z
        assert bool((biases["calibrated"] < 0).all()) and biases["calibrated"].unique().numel() > 1
    else:
        assert torch.equal(biases["calibrated"], torch.full_like(biases["calibrated"], start))


def test_a_log_sigma_option_that_is_not_a_number_or_auto_is_refused() -> None:
    with pytest.raises(InputError, match=r"log_sigma_init='wide' must be a finite number or 'auto'"):
        fxvae.study.CompareOptions(log_sigma_init="wide")


def test_options_saved_before_the_fold_field_read_back_with_its_default() -> None:
    saved = compare_module.json_ready(fxvae.study.CompareOptions(epochs=3).to_dict())
    del saved["fold"]
    options = fxvae.study.CompareOptions.from_dict(saved)
    assert options == fxvae.study.CompareOptions(epochs=3)


def test_a_comparison_saved_before_an_option_existed_resumes_at_its_default_only(tmp_path: Path) -> None:
    data = {"train": 90, "test": 10, "split": "holdout"}
    saved = compare_module.json_ready(fxvae.study.CompareOptions().to_dict())
    del saved["fold"]
    records = [{"type": "config", "options": saved, "data": data}]
    compare_module._check_same(records, {"options": fxvae.study.CompareOptions().to_dict(), "data": data}, tmp_path)
    unfolded = {"options": fxvae.study.CompareOptions(fold=False).to_dict(), "data": data}
    with pytest.raises(InputError, match=r"other settings: fold \(True then, False now\)"):
        compare_module._check_same(records, unfolded, tmp_path)


def test_data_without_a_length_is_refused(trained: tuple) -> None:
    ae, data = trained
    with pytest.raises(fxvae.InputError, match="a stream without a length cannot be shuffled or split"):
        fxvae.compare(ae, (b for b in data.split(10)), **TINY)


def test_discrete_latents_compare_the_fitted_quantiser_with_a_random_one_and_scratch(trained: tuple) -> None:
    ae, data = trained
    options = TINY | {"latent": "vq", "codebook_size": 16, "starts": ("scratch", "warm", "random", "ae")}
    result = fxvae.compare(ae, data, **options)
    assert {r.final.kind for r in result.runs} == {"vq", "ae"}
    warm, random = result.run("warm", 0), result.run("random", 0)
    # k-means on the trained AE's codes starts closer to the AE than a codebook drawn at random.
    assert warm.points[0].objective < random.points[0].objective
    assert warm.points[0].evaluation.codes_used > random.points[0].evaluation.codes_used
    assert "bits/sample" in result.to_markdown() and result.measure == "distortion"


@pytest.mark.parametrize(
    ("latent", "start", "message"),
    [("vq", "calibrated", "'calibrated' start is for a Gaussian latent"), ("gaussian", "random", "for a discrete")],
)
def test_a_start_of_the_other_latent_family_is_refused(trained: tuple, latent: str, start: str, message: str) -> None:
    ae, data = trained
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.compare(ae, data, latent=latent, starts=("scratch", start), **TINY)


@pytest.mark.parametrize(
    ("likelihood", "expected"),
    [
        (fxvae.likelihoods.Gaussian(sigma=0.05), lambda recon: 64 / (2 * 0.05**2)),
        (
            fxvae.likelihoods.Bernoulli(),
            lambda recon: (torch.sigmoid(recon) * torch.sigmoid(-recon)).sum(1).mean() / 2,
        ),
        (fxvae.likelihoods.LogProb(lambda recon, x: -(recon - x).abs().sum(1)), lambda recon: 64 / 2),
    ],
    ids=["gaussian", "bernoulli", "log_prob"],
)
def test_a_quantizers_term_joins_the_nats_at_half_the_reconstructions_fisher_information(likelihood, expected) -> None:
    recon = torch.randn(16, 64)
    assert loop.quantizer_weight(likelihood, recon).item() == pytest.approx(float(expected(recon)), rel=1e-5)


def test_a_discrete_runs_loss_is_the_nll_plus_the_weighted_quantizer_term(trained: tuple) -> None:
    ae, data = trained
    options = fxvae.study.CompareOptions(latent="vq", codebook_size=16, likelihood="bernoulli", starts=("warm",))
    begun = begin("warm", ae, (data[:8],), fxvae.study.Samples(data), options, 0, None)
    likelihood = fxvae.likelihoods.get("bernoulli")
    run = loop.start_run(begun, 0, options, likelihood, 1, torch.device("cpu"), 0)
    x = data[:32]
    before = {k: v.clone() for k, v in begun.model.state_dict().items()}
    torch.manual_seed(0)
    total = run.loss((x,))
    begun.model.load_state_dict(before)  # a training forward moves the codebook's moving averages
    torch.manual_seed(0)
    recon = begun.model(x)
    nll = likelihood.nll(recon, x)
    expected = nll + loop.quantizer_weight(likelihood, recon) * begun.aux()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


class _Jittered(torch.utils.data.Dataset):
    """Samples with noise drawn as they are read, as a Dataset with random augmentation does."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.data[index] + 0.05 * torch.randn(self.data.shape[1:])).clamp(0, 1)


def _without_timings(records: list[dict]) -> list[dict]:
    timed = ("seconds", "steps_per_s", "threads")
    return [{k: v for k, v in r.items() if k not in timed} for r in records if r["type"] != "throughput"]


def test_two_runs_give_the_same_records_whatever_the_global_random_state(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    means = torch.nn.Sequential(ae, torch.nn.Sigmoid()).eval()  # pixel means: a Gaussian likelihood fits
    options = TINY | {"likelihood": "gaussian", "starts": ("scratch", "warm", "calibrated")}
    records = []
    for seed, out in ((1, tmp_path / "a"), (2, tmp_path / "b")):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        fxvae.compare(means, _Jittered(data), out=out, **options)
        assert torch.equal(torch.get_rng_state(), before)  # the global random state is left as it was
        records.append(_without_timings(fxvae.study.ledger.records(out / "metrics.jsonl")))
    assert "optimal" in records[0][0]["likelihood"]
    assert records[0] == records[1]


def test_each_runs_final_model_is_a_file_that_measures_as_its_final(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("scratch", "calibrated", "ae"), out=tmp_path, **TINY)
    finals = {r["start"]: r for r in fxvae.study.ledger.records(tmp_path / "metrics.jsonl") if r["type"] == "final"}
    _, test = fxvae.study.Samples(data).split(0.1, seed=0)
    for start in ("scratch", "calibrated"):
        assert finals[start]["model_file"] == f"models/{start}-seed0.safetensors"
        vae, _ = fxvae.load(DigitsAE(), tmp_path / finals[start]["model_file"], data[:8])
        measured = fxvae.evaluate(vae, test, likelihood="bernoulli", k=4, seed=0)
        assert measured == fxvae.Evaluation.from_dict(finals[start]["eval"])
    # The AE start is an AE: its plain state dict, an AE checkpoint as every command reads one.
    tensors, _ = fxvae.io.checkpoints.read_state_dict(tmp_path / finals["ae"]["model_file"])
    plain = DigitsAE()
    plain.load_state_dict(tensors)
    assert fxvae.evaluate(plain, test, likelihood="bernoulli") == fxvae.Evaluation.from_dict(finals["ae"]["eval"])


def test_the_final_records_the_held_out_mse_in_eval_mode_and_with_z_drawn(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("warm", "ae"), out=tmp_path, **TINY)
    finals = {r["start"]: r for r in fxvae.study.ledger.records(tmp_path / "metrics.jsonl") if r["type"] == "final"}
    _, test = fxvae.study.Samples(data).split(0.1, seed=0)
    x = test.batch(torch.arange(len(test)))[0]
    vae, _ = fxvae.load(DigitsAE(), tmp_path / finals["warm"]["model_file"], data[:8])
    with torch.no_grad():
        eval_mse = (torch.sigmoid(vae.eval()(x)) - x).pow(2).mean().item()
        with fxvae.study.compare._seeded(torch.device("cpu"), "mse", "warm", 0, 2):
            vae.get_submodule(fxvae.conversion(vae).reparameterize).train()
            sampled_mse = (torch.sigmoid(vae(x)) - x).pow(2).mean().item()
    assert finals["warm"]["mse"]["eval"] == pytest.approx(eval_mse, rel=1e-6)
    assert finals["warm"]["mse"]["sampled"] == pytest.approx(sampled_mse, rel=1e-6)
    assert sampled_mse != pytest.approx(eval_mse, rel=1e-3)
    with torch.no_grad():
        ae_mse = (torch.sigmoid(ae(x)) - x).pow(2).mean().item()
    # The AE start trained on for 2 epochs: its own MSE, and nothing drawn.
    assert finals["ae"]["mse"]["sampled"] is None and finals["ae"]["mse"]["eval"] != ae_mse


@pytest.mark.parametrize(
    ("latent", "starts"),
    [
        ("gaussian", ("ae", "scratch", "warm", "calibrated")),
        ("vq", ("scratch", "warm", "random")),
        ("fsq", ("scratch", "warm", "random")),
    ],
)
def test_the_default_starts_are_the_latents_own(latent: str, starts: tuple) -> None:
    assert fxvae.study.CompareOptions(latent=latent).starts == starts


def test_progress_off_a_terminal_is_a_line_per_measured_epoch(trained: tuple, capsys) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("warm", "scratch"), **TINY | {"progress": True})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("comparing: ")]
    assert len(lines) == 2 * 3  # each start at epochs 0, 1 and 2
    assert lines[0].startswith("comparing: warm seed 0 epoch 0/2: held-out -ELBO ")
    assert re.fullmatch(r"comparing: scratch seed 0 epoch 2/2: held-out -ELBO [\d.]+ \[24/24, 0:\d\d:\d\d\]", lines[-1])


def test_a_progress_bar_writes_plain_lines_to_a_stream_that_is_no_terminal() -> None:
    stream = io.StringIO()
    with fxvae.progress.bar("comparing", 10, stream=stream) as shown:
        shown.advance(4)
        shown.describe("warm seed 0 epoch 1/5: held-out -ELBO 3.25")
    assert stream.getvalue() == "comparing: warm seed 0 epoch 1/5: held-out -ELBO 3.25 [4/10, 0:00:00]\n"


@pytest.mark.parametrize("which", ["train", "test"])
def test_data_the_ae_cannot_take_is_an_input_error_naming_both_shapes(which: str) -> None:
    right, wrong = torch.rand(40, 16), torch.rand(40, 12)
    train, test = (wrong, right) if which == "train" else (right, wrong)
    with pytest.raises(InputError, match=r"has shape \[\d+, 12\], but Sequential takes \['batch', 16\]"):
        fxvae.compare(mlp_ae(), train, test, epochs=1, k=1, final_k=1, progress=False)
