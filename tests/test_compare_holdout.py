"""fxvae.compare's held-out data: a split of data the AE may have seen is said to be one, and the AE's own
training data (``ae_train``) keeps its samples out of the held-out split."""

from __future__ import annotations

import pytest
import torch

import fxvae
from fxvae.study import Samples
from tests.zoo import BY_NAME, build

TINY = {"epochs": 1, "k": 1, "final_k": 2, "likelihood": "bernoulli", "progress": False}
LEAK = "the held-out data is a seeded 0.1 of the training data, which the AE checkpoint may have been trained on"


def test_a_split_of_the_data_warns_that_the_ae_may_have_seen_it(trained: tuple) -> None:
    ae, data = trained
    with pytest.warns(UserWarning, match=LEAK) as caught:
        result = fxvae.compare(ae, data, starts=("scratch", "warm", "calibrated"), **TINY)
    assert len(caught) == 1
    (warning,) = result.config["warnings"]
    assert warning.startswith(LEAK)
    assert "(warm, calibrated) are favoured" in warning and "--test" in warning and "--ae-train" in warning
    assert "never trained on" not in result.config["data"]["split"]
    assert "may have been trained on" in result.config["data"]["split"]


@pytest.mark.filterwarnings("error")
def test_given_test_data_gives_no_warning(trained: tuple) -> None:
    ae, data = trained
    result = fxvae.compare(ae, data[:300], data[300:], starts=("scratch", "warm"), **TINY)
    assert result.config["warnings"] == []


@pytest.mark.filterwarnings("error")
def test_ae_train_holds_out_only_samples_the_ae_never_saw(trained: tuple) -> None:
    ae, data = trained
    seen, unseen = data[:360], data[360:]
    result = fxvae.compare(ae, data, starts=("warm", "scratch"), ae_train=seen, **TINY)
    assert result.config["warnings"] == []
    assert result.config["data"]["test"] == 40 and result.config["data"]["train"] == 360
    assert "not in the AE's training data" in result.config["data"]["split"]
    # The warm start at epoch 0 is the plain conversion: measured on exactly the unseen samples.
    vae, _ = fxvae.convert(ae, data[:64])
    assert result.run("warm", 0).points[0].evaluation == fxvae.evaluate(vae, unseen, likelihood="bernoulli", seed=0)


def test_ae_train_leaves_the_held_out_share_when_more_samples_are_unseen() -> None:
    data = torch.arange(200.0).reshape(100, 2)
    kept, held, unseen = Samples(data).split_unseen(Samples(data[:50]).row_hashes(), 0.1, seed=0)
    assert (len(kept), len(held), unseen) == (90, 10, 50)
    held_rows = held.batch(torch.arange(len(held)))[0]
    assert bool((held_rows[:, 0] >= 100).all())  # rows 50.. of the data, never rows the AE saw
    kept_rows = kept.batch(torch.arange(len(kept)))[0]
    assert len(set(held_rows[:, 0].tolist()) | set(kept_rows[:, 0].tolist())) == 100


def test_ae_train_matches_the_data_input_of_tuples_and_other_dtypes() -> None:
    entry = BY_NAME["conditional"]
    x, label = entry.inputs(120)
    model = build(entry, seed=3)
    options = TINY | {"likelihood": "gaussian", "sigma": 1.0, "starts": ("warm", "scratch")}
    # The AE's training data as float64, without the labels: the rows of x decide.
    result = fxvae.compare(model, (x, label), ae_train=x[:100].double(), **options)
    assert result.config["data"]["test"] == 12 and result.config["warnings"] == []


def test_ae_train_holding_every_sample_is_refused(trained: tuple) -> None:
    ae, data = trained
    with pytest.raises(fxvae.InputError, match=r"every one of the 400 samples .* none is left to hold out: pass"):
        fxvae.compare(ae, data, ae_train=data.flip(0), **TINY)


def test_ae_train_of_another_sample_shape_is_refused(trained: tuple) -> None:
    ae, data = trained
    with pytest.raises(fxvae.InputError, match=r"holds samples of shape \[32\], the data of shape \[64\]"):
        fxvae.compare(ae, data, ae_train=data[:, :32], **TINY)


def test_test_data_the_ae_trained_on_is_warned_about(trained: tuple) -> None:
    ae, data = trained
    with pytest.warns(UserWarning, match=r"10 of the 100 held-out samples are in the AE's training data"):
        result = fxvae.compare(ae, data[:300], data[290:390], ae_train=data[:300], starts=("warm", "scratch"), **TINY)
    assert len(result.config["warnings"]) == 1
