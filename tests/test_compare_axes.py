"""fxvae.compare measures the AE and each VAE on the same axes at each run's end: the final record's "axes" and
"pictures" (the record format of the report), the labels' and options' checks before any training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import fxvae
from fxvae.examples import DigitsAE
from fxvae.measure.density import fit_density
from fxvae.measure.fidelity import psnr, ssim
from fxvae.study import Samples, loop
from tests.zoo import BY_NAME, build

pytest.importorskip("sklearn")
pytest.importorskip("torchmetrics")

TINY = {"epochs": 1, "k": 2, "final_k": 4, "likelihood": "bernoulli", "progress": False, "shown": 4}
# These tests hold out a split of the AE's own training data on purpose (tests/test_compare_holdout.py checks
# the warning that says so).
pytestmark = pytest.mark.filterwarnings("ignore:the held-out data is a seeded")


def _labels(count: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.as_tensor(load_digits().target[:count])


def _anomalies(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits with every tenth replaced by uniform noise, and 1 where it was."""
    flags = torch.zeros(len(data), dtype=torch.long)
    flags[::10] = 1
    noisy = data.clone()
    noisy[::10] = torch.rand(int(flags.sum()), data.shape[1], generator=torch.Generator().manual_seed(0))
    return noisy, flags


def _finals(out: Path) -> dict[str, dict]:
    return {r["start"]: r for r in fxvae.study.ledger.records(out / "metrics.jsonl") if r["type"] == "final"}


@pytest.fixture(scope="module")
def compared(trained: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict], dict, Path]:
    """One comparison of the AE and its warm VAE on the digits, with class labels and anomaly labels."""
    ae, data = trained
    noisy, flags = _anomalies(data)
    out = tmp_path_factory.mktemp("axes")
    fxvae.compare(
        ae,
        noisy,
        starts=("ae", "warm"),
        image_shape=(8, 8),
        labels=_labels(len(data)),
        anomaly_labels=flags,
        out=out,
        **TINY,
    )
    config = fxvae.study.ledger.records(out / "metrics.jsonl")[0]
    return _finals(out), config, out


def _split(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    train, test = Samples(data).split(0.1, seed=0)
    return train.batch(torch.arange(len(train)))[0], test.batch(torch.arange(len(test)))[0]


def _trained_ae(out: Path, finals: dict[str, dict]) -> DigitsAE:
    tensors, _ = fxvae.io.checkpoints.read_state_dict(out / finals["ae"]["model_file"])
    ae = DigitsAE()
    ae.load_state_dict(tensors)
    return ae.eval()


def test_the_default_gaussian_starts_put_the_ae_beside_its_vaes() -> None:
    assert fxvae.study.CompareOptions().starts == ("ae", "scratch", "warm", "calibrated")


def test_every_final_record_holds_the_axes_and_pictures(compared: tuple) -> None:
    finals, _, _ = compared
    keys = {"psnr", "ssim", "nll", "samples", "latent", "active_units", "latent_dims", "interpolation", "probe"}
    keys |= {"auroc", "auroc_score", "paired", "densities"}
    for start in ("ae", "warm"):
        assert set(finals[start]["axes"]) == keys
        assert set(finals[start]["pictures"]) == {"samples", "interpolation"}
    json.dumps(finals)  # the record is JSON as written


def test_the_aes_nll_per_density_is_evaluate_with_that_density_at_final_k_and_the_runs_seed(
    trained: tuple, compared: tuple
) -> None:
    finals, _, out = compared
    ae = _trained_ae(out, finals)
    train, test = _split(_anomalies(trained[1])[0])
    axes = finals["ae"]["axes"]
    assert sorted(axes["nll"]) == ["gaussian", "gmm"]
    for kind in ("gaussian", "gmm"):
        density = fit_density(ae, train, kind=kind, seed=0)
        measured = fxvae.evaluate(ae, test, likelihood="bernoulli", k=4, seed=0, density=density, per_sample=True)
        assert axes["nll"][kind]["value"] == pytest.approx(measured.nll.value, rel=1e-4)
        assert axes["nll"][kind]["stderr"] == pytest.approx(measured.nll.stderr, rel=1e-3)
        assert axes["paired"]["nll"][kind] == pytest.approx(measured.per_sample["nll"].tolist(), rel=1e-4, abs=1e-5)


def test_a_vaes_nll_is_its_final_evaluations_with_one_value_per_held_out_sample(compared: tuple) -> None:
    finals, config, _ = compared
    warm = finals["warm"]
    assert warm["axes"]["nll"] == {
        "prior": {"value": warm["eval"]["nll"]["value"], "stderr": warm["eval"]["nll"]["stderr"]}
    }
    paired = warm["axes"]["paired"]["nll"]["prior"]
    assert len(paired) == config["data"]["test"]
    assert sum(paired) / len(paired) == pytest.approx(warm["eval"]["nll"]["value"], rel=1e-5)


def test_the_paired_mse_is_each_held_out_samples_error_in_eval_mode(compared: tuple) -> None:
    finals, config, _ = compared
    for final in finals.values():
        errors = final["axes"]["paired"]["mse"]
        assert len(errors) == config["data"]["test"]
        assert sum(errors) / len(errors) == pytest.approx(final["mse"]["eval"], rel=1e-5)


def test_the_ae_samples_from_its_densities_and_a_vae_from_its_prior_too(compared: tuple) -> None:
    finals, _, _ = compared
    assert sorted(finals["ae"]["axes"]["samples"]) == sorted(finals["ae"]["axes"]["latent"]) == ["gaussian", "gmm"]
    assert sorted(finals["warm"]["axes"]["samples"]) == ["gaussian", "gmm", "prior"]
    assert sorted(finals["warm"]["axes"]["latent"]) == ["gaussian", "gmm", "prior"]
    distance = finals["warm"]["axes"]["samples"]["prior"]
    assert distance["features"] == "the data, flattened" and distance["n_samples"] == distance["n_reference"] == 40
    assert sorted(finals["warm"]["pictures"]["samples"]) == ["gaussian", "gmm", "prior"]
    assert all(len(shown) == 4 and len(shown[0]) == 64 for shown in finals["warm"]["pictures"]["samples"].values())


def test_the_aes_row_of_the_samples_grid_decodes_its_gaussian_density_not_n01(compared: tuple) -> None:
    finals, _, out = compared
    assert finals["ae"]["samples_from"] == "gaussian"
    assert finals["ae"]["samples"] == finals["ae"]["pictures"]["samples"]["gaussian"]
    assert finals["warm"]["samples_from"] is None
    comparison = fxvae.study.read(out)
    title = fxvae.study.plots.grid_figure(comparison, "samples")._suptitle.get_text()
    assert "the AE row: its decoder on draws of the gaussian fitted to its codes" in title


def test_an_interpolation_strip_runs_from_one_held_out_reconstruction_to_the_next(
    trained: tuple, compared: tuple
) -> None:
    finals, _, out = compared
    ae = _trained_ae(out, finals)
    _, test = _split(_anomalies(trained[1])[0])
    strips = torch.tensor(finals["ae"]["pictures"]["interpolation"])
    assert strips.shape == (4, 8, 64)
    with torch.no_grad():
        ends = torch.sigmoid(ae(test[:2]))
    assert torch.allclose(strips[0, 0], ends[0], atol=1e-4) and torch.allclose(strips[0, -1], ends[1], atol=1e-4)
    assert finals["ae"]["axes"]["interpolation"]["n_samples"] == 40


def test_psnr_and_ssim_are_the_eval_reconstructions_and_a_vaes_with_z_drawn(trained: tuple, compared: tuple) -> None:
    finals, _, out = compared
    ae = _trained_ae(out, finals)
    _, test = _split(_anomalies(trained[1])[0])
    with torch.no_grad():
        recon = torch.sigmoid(ae(test)).reshape(-1, 1, 8, 8)
    images, span = test.reshape(-1, 1, 8, 8), (float(test.min()), float(test.max()))
    axes = finals["ae"]["axes"]
    assert axes["psnr"] == {"eval": pytest.approx(psnr(recon, images, data_range=span), rel=1e-5), "sampled": None}
    assert axes["ssim"]["eval"] == pytest.approx(ssim(recon, images, data_range=span), rel=1e-5)
    warm = finals["warm"]["axes"]
    assert warm["psnr"]["sampled"] < warm["psnr"]["eval"]


def test_active_units_count_the_latent_elements_that_vary_over_the_held_out_data(compared: tuple) -> None:
    finals, _, _ = compared
    assert finals["ae"]["axes"]["latent_dims"] == finals["warm"]["axes"]["latent_dims"] == 4
    assert finals["warm"]["axes"]["active_units"] == finals["warm"]["eval"]["active_units"]
    assert 0 < finals["ae"]["axes"]["active_units"] <= 4


def test_labels_give_a_linear_probe_on_the_codes_well_above_chance(compared: tuple) -> None:
    finals, config, _ = compared
    assert config["axes"]["labels"] == {"classes": 10}
    for final in finals.values():
        probe = final["axes"]["probe"]
        assert probe["value"] > 0.5 and 0 < probe["stderr"] < 0.1  # ten classes: chance is 0.1


def test_anomaly_labels_give_the_auroc_of_the_aes_reconstruction_and_the_vaes_nll(compared: tuple) -> None:
    finals, _, _ = compared
    assert finals["ae"]["axes"]["auroc_score"] == "recon" and finals["warm"]["axes"]["auroc_score"] == "nll"
    assert finals["ae"]["axes"]["auroc"] > 0.95 and finals["warm"]["axes"]["auroc"] > 0.95  # noise among digits


def test_the_densities_fitted_are_recorded_and_rebuild(compared: tuple) -> None:
    finals, config, _ = compared
    assert config["axes"]["densities"] == ["gaussian", "gmm"]
    for kind, fitted in finals["ae"]["axes"]["densities"].items():
        assert fxvae.measure.density.Density.from_dict(fitted).kind == kind


class _Digits(torch.utils.data.Dataset):
    """The digits as a map-style Dataset (not tensors): its split is a Subset of it."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def test_labels_follow_the_held_out_split_of_a_dataset(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    options = TINY | {"starts": ("warm",), "density": ("gaussian",)}
    fxvae.compare(ae, _Digits(data), labels=_labels(len(data)).tolist(), out=tmp_path, **options)
    assert _finals(tmp_path)["warm"]["axes"]["probe"]["value"] > 0.5  # labels out of step would be near 0.1


def test_density_names_the_densities_fitted(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("ae", "warm"), density=("gaussian",), out=tmp_path, **TINY)
    finals = _finals(tmp_path)
    assert list(finals["ae"]["axes"]["nll"]) == ["gaussian"]
    assert list(finals["warm"]["axes"]["samples"]) == ["prior", "gaussian"]
    assert finals["ae"]["axes"]["psnr"] is None and finals["ae"]["axes"]["probe"] is None  # no image_shape, no labels


def test_without_scikit_learn_the_gmm_is_skipped_with_a_warning(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    importable = fxvae.study.axes._importable
    monkeypatch.setattr(fxvae.study.axes, "_importable", lambda name: name != "sklearn" and importable(name))
    with pytest.warns(UserWarning, match="the gmm density was skipped: it needs scikit-learn"):
        result = fxvae.compare(ae, data, starts=("ae", "warm"), **TINY)
    assert result.config["axes"]["densities"] == ["gaussian"]


def row_means(batch: torch.Tensor) -> torch.Tensor:
    """A feature extractor: each 8x8 digit's row means."""
    return batch.reshape(len(batch), 8, 8).mean(2)


def test_features_measure_the_sample_distances_in_their_space(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    fxvae.compare(ae, data, starts=("ae", "warm"), density=("gaussian",), features=row_means, out=tmp_path, **TINY)
    axes = _finals(tmp_path)["warm"]["axes"]
    assert axes["samples"]["prior"]["features"] == axes["interpolation"]["features"] == "row_means"
    assert axes["latent"]["prior"]["features"] == "the data, flattened"  # codes are compared as they are
    assert fxvae.study.ledger.records(tmp_path / "metrics.jsonl")[0]["axes"]["features"] == "row_means"


def test_a_conditional_ae_is_measured_with_each_samples_condition(tmp_path: Path) -> None:
    entry = BY_NAME["conditional"]
    x, label = entry.inputs(120)
    options = TINY | {"likelihood": "gaussian", "sigma": 1.0, "density": ("gaussian",), "starts": ("ae", "warm")}
    fxvae.compare(build(entry, seed=3), (x, label), out=tmp_path, **options)
    for final in _finals(tmp_path).values():
        axes = final["axes"]
        assert all(math.isfinite(value["value"]) for value in axes["nll"].values())
        assert len(final["pictures"]["samples"]["gaussian"]) == 4


def test_too_few_training_samples_for_the_gmm_skip_it_with_a_warning(trained: tuple) -> None:
    ae, data = trained
    with pytest.warns(UserWarning, match="the gmm density was skipped: 9 training samples are too few"):
        result = fxvae.compare(ae, data[:9], data[9:30], starts=("ae", "warm"), **TINY)
    assert result.config["axes"]["densities"] == ["gaussian"]


def test_the_budget_keeps_time_for_the_aes_likelihood_under_each_density(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    now = [0.0]
    monkeypatch.setattr(fxvae.study.compare, "_clock", lambda: now[0])
    train_epoch, measure = loop.Run.train_epoch, fxvae.study.compare.evaluate

    def train(self, *args):
        now[0] += 1.0
        return train_epoch(self, *args)

    def evaluate(model, *args, k: int, **kwargs):
        # A clock that only work moves: an epoch takes 1 s, a pass over the held-out data 1 s per draw (an AE
        # without a density: one pass).
        drawn = kwargs.get("density") is not None or fxvae.recipe.META_KEY in getattr(model, "meta", {})
        now[0] += k if drawn else 1
        return measure(model, *args, k=k, **kwargs)

    monkeypatch.setattr(loop.Run, "train_epoch", train)
    monkeypatch.setattr(fxvae.study.compare, "evaluate", evaluate)
    options = TINY | {"epochs": 50, "k": 1, "final_k": 10, "max_minutes": 1.0, "density": ("gaussian",)}
    result = fxvae.compare(ae, data, starts=("ae", "warm"), **options)
    assert now[0] <= 60.0  # the AE's nll under the density at final_k (10 s) fit in the budget
    assert result.run("warm", 0).points[-1].epoch >= 3


def _no_training(monkeypatch) -> None:
    def refused(*args, **kwargs):
        raise AssertionError("trained before the labels were checked")

    monkeypatch.setattr(loop.Run, "train_epoch", refused)


def test_labels_of_the_wrong_length_are_refused_before_any_training_naming_both_lengths(
    trained: tuple, monkeypatch
) -> None:
    ae, data = trained
    _no_training(monkeypatch)
    with pytest.raises(fxvae.InputError, match="labels holds 399 labels, but the training data holds 400 samples"):
        fxvae.compare(ae, data, labels=_labels(399), **TINY)
    with pytest.raises(fxvae.InputError, match="anomaly_labels holds 10 labels, but the held-out data holds 100"):
        fxvae.compare(ae, data[:300], data[300:], anomaly_labels=(torch.zeros(300), torch.zeros(10)), **TINY)


def test_one_labels_array_with_held_out_data_is_refused_asking_for_the_pair(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    _no_training(monkeypatch)
    with pytest.raises(fxvae.InputError, match=r"pass labels=\(train_labels, test_labels\)"):
        fxvae.compare(ae, data[:300], data[300:], labels=_labels(300), **TINY)


def test_anomaly_labels_other_than_0_and_1_are_refused(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    _no_training(monkeypatch)
    with pytest.raises(fxvae.InputError, match="must be 0 \\(normal\\) or 1 \\(anomaly\\)"):
        fxvae.compare(ae, data, anomaly_labels=_labels(400), **TINY)


def test_held_out_data_without_anomalies_is_refused_for_the_auroc(trained: tuple, monkeypatch) -> None:
    ae, data = trained
    _no_training(monkeypatch)
    with pytest.raises(fxvae.InputError, match="an AUROC needs anomalies"):
        fxvae.compare(ae, data[:300], data[300:], anomaly_labels=(torch.ones(300), torch.zeros(100)), **TINY)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"labels": torch.zeros(400)}, "labels= measure the axes at the end of a Gaussian comparison"),
        ({"features": row_means}, "features= measure the axes at the end of a Gaussian comparison"),
        ({"density": ("gmm",)}, "density= fits ex-post densities at the end of a Gaussian comparison"),
    ],
)
def test_the_axes_inputs_of_a_discrete_comparison_are_refused(
    trained: tuple, monkeypatch, given: dict, message: str
) -> None:
    ae, data = trained
    _no_training(monkeypatch)
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.compare(ae, data, latent="vq", codebook_size=16, **TINY, **given)


def test_a_discrete_comparison_records_no_axes(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    options = TINY | {"latent": "vq", "codebook_size": 16, "starts": ("warm", "ae")}
    fxvae.compare(ae, data, out=tmp_path, **options)
    assert all("axes" not in final for final in _finals(tmp_path).values())
