"""Every error path names the node or module at fault and says what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxvae
from tests.zoo import ZOO, MLPSigmoid, UNet, build

MLP = next(e for e in ZOO if e.name == "mlp_sigmoid")


def test_a_unet_raises_a_bottleneck_error_naming_the_skip() -> None:
    with pytest.raises(fxvae.BottleneckError, match=r"'down'.*bypasses it.*bottleneck="):
        fxvae.convert(UNet(), torch.randn(2, 1, 8, 8))


def test_a_forward_that_raises_is_a_trace_error_naming_the_users_line() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x).view(-1, 7)

    with pytest.raises(fxvae.TraceError) as info:
        fxvae.convert(Broken(), torch.randn(2, 8))
    message = str(info.value)
    assert "raises on the example inputs ((2, 8) torch.float32 on cpu)" in message
    assert "return self.enc(x).view(-1, 7)" in message and "test_errors.py" in message


def test_an_unknown_forced_bottleneck_lists_the_candidates() -> None:
    with pytest.raises(fxvae.BottleneckError, match=r"bottleneck='nope' names no node.*candidates.*enc_3 \[8\]"):
        fxvae.find_bottleneck(build(MLP), MLP.inputs(2), bottleneck="nope")


def test_a_forced_bottleneck_without_a_layer_before_it_gets_a_pointwise_head() -> None:
    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out((x - x.mean(1, keepdim=True)).tanh())

    vae, _ = fxvae.convert(Normalised(), torch.randn(2, 8), bottleneck="tanh")
    assert fxvae.conversion(vae).head_kind == "pointwise"


def test_a_model_that_does_not_compress_raises_a_bottleneck_error() -> None:
    widening = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(fxvae.BottleneckError, match=r"no node narrower than the input \(4\)"):
        fxvae.convert(widening, torch.randn(2, 4))


def test_a_non_tensor_first_input_raises_an_input_error() -> None:
    class LabelFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = MLPSigmoid()

        def forward(self, scale: float, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * scale

    with pytest.raises(fxvae.InputError, match=r"first example input of LabelFirst is a float, not a tensor"):
        fxvae.find_bottleneck(LabelFirst(), (2.0, torch.randn(2, 64)))


def test_kl_before_any_forward_raises() -> None:
    _, kl = fxvae.convert(build(MLP), MLP.inputs(2))
    with pytest.raises(fxvae.FxvaeError, match=r"call vae\(\*inputs\) before"):
        kl()


def test_posterior_of_a_module_fxvae_did_not_make_raises() -> None:
    with pytest.raises(fxvae.FxvaeError, match=r"not made by fxvae\.convert"):
        fxvae.posterior(torch.fx.symbolic_trace(build(MLP)))


def test_loading_a_checkpoint_of_another_model_names_the_keys() -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(2))
    with pytest.raises(fxvae.CheckpointError, match=r"missing keys \['enc.0.weight'"):
        fxvae.load_ae_state_dict(vae, nn.Linear(2, 2).state_dict())


def test_loading_a_checkpoint_of_another_size_names_the_shapes() -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(2))
    state = {k: v for k, v in build(MLP).state_dict().items()}
    state["dec.2.bias"] = torch.zeros(3)
    with pytest.raises(
        fxvae.CheckpointError,
        match=r"shape mismatch for \['dec.2.bias: \(3,\) in the file, \(64,\) in the model'\]",
    ):
        fxvae.load_ae_state_dict(vae, state)
