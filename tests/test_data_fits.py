"""fxvae.io.data.check_model_takes: data a model cannot take is an InputError naming both shapes; a model's own
failure stays the model's; the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxvae
from fxvae.io.data import check_model_takes
from tests import cli_models


def test_a_conv_model_names_the_channels_its_first_layer_reads() -> None:
    expected = (
        r"^images/ has shape \[4, 1, 8, 8\], but _ConvAE takes \['batch', 3, 'H', 'W'\]: its layer 'enc.0' "
        r"\(Conv2d\) reads 3 channels; pass data of that shape$"
    )
    with pytest.raises(fxvae.InputError, match=expected):
        check_model_takes(cli_models.conv_ae(), (torch.zeros(4, 1, 8, 8),), "images/")


def test_data_of_another_dtype_than_the_weights_is_named_with_both() -> None:
    with pytest.raises(fxvae.InputError, match=r"^d.npy is torch.float64, but the weights of Sequential are "):
        check_model_takes(cli_models.mlp_ae(), (torch.zeros(4, 16, dtype=torch.float64),), "d.npy")


def test_a_forward_that_fails_on_data_of_the_right_shape_raises_its_own_error() -> None:
    with pytest.raises(ValueError, match="unsupported batch of 4"):
        check_model_takes(cli_models.fails_on_any_input(), (torch.zeros(4, 16),), "d.pt")


def test_data_that_fits_passes_and_the_model_keeps_its_mode_and_hooks() -> None:
    model = cli_models.conv_ae().train()
    check_model_takes(model, (torch.zeros(4, 3, 8, 8),), "d.pt")
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_reshape_before_any_layer_is_judged_by_the_first_layer_registered() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.view(-1, 784))

    with pytest.raises(fxvae.InputError, match=r"takes \['batch', 784\]: its layer 'fc' \(Linear\) reads 784 feat"):
        check_model_takes(Flat(), (torch.zeros(2, 1, 32, 32),), "d.pt")


def test_a_model_built_for_one_batch_size_is_run_on_the_whole_batch_given() -> None:
    class FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).view(4, 16)

    check_model_takes(FixedBatch(), (torch.zeros(4, 16),), "--input-shape 4,16")
