"""Bad inputs to convert: each raises an FxvaeError subclass saying what is wrong and what to do, and the
user's model comes out bit-identical (tensors, their identity, flags, hooks, gradients)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import fxvae
from tests.snapshot import assert_unchanged, lived_in, snapshot
from tests.zoo import ConvLatent, MLPSigmoid, NormDropoutNearBottleneck, UNet

MLP_X = (2, 64)


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 2), nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"this model wants {x.shape[1] * 2} features")


class ReturnsNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> None:
        self.enc(x)


class ReturnsText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> str:
        return f"{self.enc(x).shape}"


class ReturnsClasses(nn.Module):
    """A classifier-like model: its only outputs are integer labels."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 2), nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.dec(self.enc(x))
        return logits.argmax(1), (logits > 0).long()


class WithIndex(nn.Module):
    """An AE whose reconstruction adds the index of the largest code, and with a side output of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec, self.side = nn.Linear(8, 2), nn.Linear(2, 8), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.enc(x)
        return self.dec(z) + z.argmax(1, keepdim=True), self.side(x)


class NoisyInEval(nn.Module):
    """Value-based control flow (only the hooks tier captures it) and noise that eval mode keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 2), nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        if z.sum() > 1e9:
            z = z * 2
        return self.dec(z + torch.randn_like(z))


def _meta_mlp() -> nn.Module:
    with torch.device("meta"):
        return MLPSigmoid().eval()


def _converted() -> nn.Module:
    return fxvae.convert(MLPSigmoid().eval(), torch.randn(*MLP_X))[0]


def _compiled_converted() -> nn.Module:
    # torch.compile wraps lazily: nothing compiles until the wrapper is called.
    return torch.compile(_converted())


@dataclass(frozen=True)
class Bad:
    """A bad call ``convert(model(), inputs(), **options)``, the error it must raise and the message start."""

    name: str
    model: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    error: type[fxvae.FxvaeError]
    match: str
    options: dict[str, Any] | None = None


BAD = (
    Bad(
        "features_of_the_wrong_size",
        MLPSigmoid,
        lambda: torch.randn(2, 63),
        fxvae.TraceError,
        r"forward of MLPSigmoid raises on the example inputs \(\(2, 63\) torch.float32 on cpu\) at .*zoo.py:\d+: "
        r"return self.dec\(self.enc\(x\)\): RuntimeError: mat1 and mat2 shapes cannot be multiplied.*pass example "
        r"inputs the model accepts \(shape, dtype, device, batch dimension first\)",
    ),
    Bad(
        "images_without_their_channel_dimension",
        ConvLatent,
        lambda: torch.randn(2, 8, 8),
        fxvae.TraceError,
        r"\(\(2, 8, 8\) torch.float32 on cpu\).*expected input\[1, 2, 8, 8\] to have 3 channels",
    ),
    Bad(
        "float64_data_for_a_float32_model",
        MLPSigmoid,
        lambda: torch.randn(*MLP_X, dtype=torch.float64),
        fxvae.TraceError,
        r"torch.float64 on cpu.*must have the same dtype.*the model computes in torch.float32: pass "
        r"x.to\(torch.float32\)",
    ),
    Bad(
        "float32_data_for_a_bfloat16_model",
        lambda: MLPSigmoid().to(torch.bfloat16),
        lambda: torch.randn(*MLP_X),
        fxvae.TraceError,
        r"the model computes in torch.bfloat16: pass x.to\(torch.bfloat16\)",
    ),
    Bad(
        "integer_data_for_a_float_model",
        MLPSigmoid,
        lambda: torch.randint(0, 3, MLP_X),
        fxvae.TraceError,
        r"\(\(2, 64\) torch.int64 on cpu\).*must have the same dtype.*the model computes in torch.float32: "
        r"pass x.to\(torch.float32\)",
    ),
    Bad(
        "meta_data_for_a_cpu_model",
        MLPSigmoid,
        lambda: torch.randn(*MLP_X, device="meta"),
        fxvae.TraceError,
        r"torch.float32 on meta\).*the model is on cpu: pass x.to\('cpu'\)",
    ),
    Bad(
        "cpu_data_for_a_meta_model",
        _meta_mlp,
        lambda: torch.randn(*MLP_X),
        fxvae.TraceError,
        r"torch.float32 on cpu\).*the model is on meta: pass x.to\('meta'\)",
    ),
    Bad(
        "one_sample_without_a_batch_dimension",
        MLPSigmoid,
        lambda: torch.randn(64),
        fxvae.InputError,
        r"^the data input has shape \[64\]: the example needs a batch dimension first, e.g. x.unsqueeze\(0\) of "
        r"shape \[1, 64\]$",
    ),
    Bad(
        "a_0_d_tensor",
        MLPSigmoid,
        lambda: torch.tensor(1.0),
        fxvae.InputError,
        r"^the data input has shape \[\]: the example needs a batch dimension first",
    ),
    Bad(
        "a_nested_list",
        MLPSigmoid,
        lambda: [[0.0] * 64, [1.0] * 64],
        fxvae.InputError,
        r"^the first example input of MLPSigmoid is a list, not a tensor: pass the data the model reconstructs first",
    ),
    Bad(
        "a_numpy_array",
        MLPSigmoid,
        lambda: np.zeros(MLP_X, dtype=np.float32),
        fxvae.InputError,
        r"^the first example input of MLPSigmoid is a ndarray, not a tensor",
    ),
    Bad(
        "a_dict_of_keyword_inputs",
        MLPSigmoid,
        lambda: {"x": torch.randn(*MLP_X)},
        fxvae.InputError,
        r"^the first example input of MLPSigmoid is a dict, not a tensor",
    ),
    Bad(
        "an_empty_batch",
        MLPSigmoid,
        lambda: torch.randn(0, 64),
        fxvae.InputError,
        r"^the example batch of shape \[0, 64\] is empty: pass at least one sample$",
    ),
    Bad(
        "nan_in_the_example",
        MLPSigmoid,
        lambda: torch.randn(*MLP_X).index_fill_(1, torch.tensor([5]), float("nan")),
        fxvae.InputError,
        r"^the example batch holds NaN or inf values: pass finite data \(a real batch\)$",
    ),
    Bad(
        "inf_in_the_example",
        MLPSigmoid,
        lambda: torch.randn(*MLP_X).index_fill_(0, torch.tensor([1]), float("inf")),
        fxvae.InputError,
        r"^the example batch holds NaN or inf values",
    ),
    Bad(
        "minus_inf_in_the_example",
        MLPSigmoid,
        lambda: torch.full(MLP_X, float("-inf")),
        fxvae.InputError,
        r"^the example batch holds NaN or inf values",
    ),
    Bad(
        "a_forward_that_raises",
        Raises,
        lambda: torch.randn(2, 8),
        fxvae.TraceError,
        r"^the forward of Raises raises on the example inputs \(\(2, 8\) torch.float32 on cpu\) at "
        r".*test_bad_inputs.py:\d+: raise ValueError\(f\"this model wants \{x.shape\[1\] \* 2\} features\"\): "
        r"ValueError: this model wants 16 features",
    ),
    Bad(
        "a_model_without_parameters",
        lambda: nn.Sequential(nn.Flatten(), nn.Unflatten(1, (64,))),
        lambda: torch.randn(*MLP_X),
        fxvae.InputError,
        r"^Sequential has no parameters: there is no trained autoencoder to convert$",
    ),
    Bad(
        "a_vae_fxvae_already_made",
        _converted,
        lambda: torch.randn(*MLP_X),
        fxvae.InputError,
        r"^MLPSigmoid is already a VAE made by fxvae.convert; convert the original autoencoder "
        r"\(fxvae.load_ae_state_dict loads new autoencoder weights into this VAE\)$",
    ),
    Bad(
        "a_compiled_vae_fxvae_already_made",
        _compiled_converted,
        lambda: torch.randn(*MLP_X),
        fxvae.InputError,
        r"^OptimizedModule is already a VAE made by fxvae.convert",
    ),
    Bad(
        "a_model_that_returns_none",
        ReturnsNone,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^ReturnsNone returns no floating-point tensor to treat as the reconstruction \(it returns None\); "
        r"convert a model whose forward returns its reconstruction$",
    ),
    Bad(
        "a_model_that_returns_text",
        ReturnsText,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^ReturnsText returns no floating-point tensor to treat as the reconstruction \(it returns a str\)",
    ),
    Bad(
        "a_model_with_only_integer_outputs",
        ReturnsClasses,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^ReturnsClasses returns no floating-point tensor to treat as the reconstruction \(it returns "
        r"only torch.int64\)",
    ),
    Bad(
        "a_forced_bottleneck_that_is_not_floating_point",
        WithIndex,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^bottleneck='argmax' is not a floating-point tensor with the batch first; candidates \(node names\): "
        r"enc \[2\].*fxvae.find_bottleneck\(model, example_inputs\) lists them with widths$",
        {"bottleneck": "argmax"},
    ),
    Bad(
        "a_forced_bottleneck_on_a_side_branch",
        WithIndex,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^bottleneck='side' is not on a path from the data input to the reconstruction \(a side branch, an "
        r"input or a constant\); candidates \(node names\): enc \[2\]",
        {"bottleneck": "side"},
    ),
    Bad(
        "a_forced_bottleneck_naming_nothing",
        MLPSigmoid,
        lambda: torch.randn(*MLP_X),
        fxvae.BottleneckError,
        r"^bottleneck='encoder.2' names no node or module on the data path; candidates \(node names\): "
        r"enc_2 \[8\], enc_3 \[8\]",
        {"bottleneck": "encoder.2"},
    ),
    Bad(
        "a_unet_whose_skip_bypasses_the_narrowest_node",
        UNet,
        lambda: torch.randn(2, 1, 8, 8),
        fxvae.BottleneckError,
        r"^no node narrower than the input \(64\) lies on every path from 'x' to 'mix'.*'x' -> 'cat' bypasses it"
        r".*Force one with bottleneck=<node or module>",
    ),
    Bad(
        "noise_that_stays_on_in_eval_mode",
        NoisyInEval,
        lambda: torch.randn(2, 8),
        fxvae.BottleneckError,
        r"^NoisyInEval returns different outputs for the same input in eval mode \(random operations stay "
        r"active\).*make eval mode deterministic$",
    ),
)


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "shared"])
@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.name)
def test_a_bad_input_raises_its_error_and_leaves_the_model_bit_identical(bad: Bad, copy: bool) -> None:
    model = lived_in(bad.model())
    before = snapshot(model)
    inputs = bad.inputs()
    with pytest.raises(bad.error, match=bad.match), warnings.catch_warnings():
        # The compile wrapper and numpy inputs may warn on the way to the error; the error is the point.
        warnings.simplefilter("ignore")
        fxvae.convert(model, inputs, copy=copy, **(bad.options or {}))
    assert_unchanged(model, before)


def test_the_bad_input_table_covers_twenty_distinct_cases() -> None:
    assert len({b.name for b in BAD}) == len(BAD) >= 20


def _replace_running_var(m: nn.Module) -> None:
    m.enc[4].running_var = m.enc[4].running_var.clone()


SNAPSHOT_CHANGES: dict[str, Callable[[nn.Module], Any]] = {
    "a_weight_value": lambda m: m.enc[0].weight.data.view(-1)[0].add_(1e-7),
    "a_parameter_object": lambda m: setattr(m.enc[0], "weight", nn.Parameter(m.enc[0].weight.detach().clone())),
    "a_buffer_value": lambda m: m.enc[4].running_mean.add_(1.0),
    "a_buffer_object": _replace_running_var,
    "a_training_flag": lambda m: m.dec[0].train(not m.dec[0].training),
    "a_hook": lambda m: m.dec[1].register_forward_pre_hook(lambda module, args: None),
    "requires_grad": lambda m: m.enc[3].bias.requires_grad_(False),
    "a_stored_grad": lambda m: setattr(m.dec[3].bias, "grad", None),
    "the_module_tree": lambda m: m.enc.add_module("extra", nn.Identity()),
}


@pytest.mark.parametrize("change", SNAPSHOT_CHANGES)
def test_the_snapshot_notices_a_change_of(change: str) -> None:
    # Every bad-input test trusts this helper, so it must fail on each thing it claims to compare.
    model = lived_in(NormDropoutNearBottleneck().eval())
    before = snapshot(model)
    assert_unchanged(model, before)
    SNAPSHOT_CHANGES[change](model)
    with pytest.raises(AssertionError):
        assert_unchanged(model, before)


class Leaky(nn.Module):
    """Scales the reconstruction by a statistic of the input: information goes around the code."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 2), nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x)) * x.std(dim=1, keepdim=True)


def test_forcing_a_bypassed_bottleneck_warns_converts_and_leaves_the_model_bit_identical() -> None:
    # The user asked for this node by name, so fxvae obeys and warns instead of refusing.
    model = lived_in(Leaky().eval())
    before = snapshot(model)
    x = torch.randn(3, 8)
    with pytest.warns(UserWarning, match=r"^bottleneck 'enc' \(enc\) is bypassed by x -> std: information reaches"):
        vae, _ = fxvae.convert(model, x, bottleneck="enc")
    assert_unchanged(model, before)
    assert fxvae.conversion(vae).bottleneck.candidates[0].reason == "forced; bypassed by x -> std"
    with torch.no_grad():
        assert torch.equal(vae.eval()(x), model(x))


class Encoder(nn.Module):
    """Projects to the code width, then refines the code twice with one shared layer (weights in a loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.project, self.refine = nn.Linear(16, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.project(x))
        for _ in range(2):
            h = torch.tanh(self.refine(h))
        return h


class SharedRefinement(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(), nn.Linear(4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_a_bottleneck_layer_applied_twice_becomes_one_mu_head_that_every_application_calls() -> None:
    # The rule: the latent is the last application's output; the layer is renamed mu_head, and its earlier
    # application (before the latent) calls mu_head too, so the weights stay shared as the AE shared them.
    model = lived_in(SharedRefinement().eval())
    before = snapshot(model)
    x = torch.randn(3, 16)
    vae, kl = fxvae.convert(model, x)
    assert_unchanged(model, before)
    recipe = fxvae.conversion(vae)
    assert (recipe.bottleneck.node, recipe.bottleneck.layer) == ("tanh_2", "encoder.refine")
    calls = [n.target for n in vae.graph.nodes if n.op == "call_module"]
    assert calls.count("mu_head") == 2 and "encoder.refine" not in calls
    assert recipe.key_map == {"encoder.refine.weight": "mu_head.weight", "encoder.refine.bias": "mu_head.bias"}
    with torch.no_grad():
        assert torch.equal(vae.eval()(x), model(x))
    loss = vae.train()(x).square().mean() + kl()
    loss.backward()
    # One parameter set receives the gradient of both applications; nothing trainable is left unused (DDP).
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad)
    assert vae.get_parameter("mu_head.weight").grad is not None


class HoldsALock(MLPSigmoid):
    """A model that keeps an object copy.deepcopy refuses (a lock; likewise an open file or a stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def test_a_model_holding_an_uncopyable_object_raises_an_input_error_suggesting_copy_false() -> None:
    model = lived_in(HoldsALock().eval())
    before = snapshot(model)
    with pytest.raises(fxvae.InputError, match=r"lock.*copy=False"):
        fxvae.convert(model, torch.randn(*MLP_X))
    assert_unchanged(model, before)


def test_a_model_holding_an_uncopyable_object_converts_with_copy_false() -> None:
    # What works today: sharing the model's modules instead of copying them.
    model = HoldsALock().eval()
    x = torch.randn(*MLP_X)
    vae, _ = fxvae.convert(model, x, copy=False)
    with torch.no_grad():
        assert torch.equal(vae.eval()(x), model(x))


MISUSE: dict[str, tuple[Callable[[], Any], dict[str, Any], str]] = {
    # Today: TypeError "unsupported operand type(s) for +: 'int' and 'str'" from deep in bottleneck.py.
    "a_bottleneck_that_is_not_a_string": (MLPSigmoid, {"bottleneck": 3}, r"bottleneck=3.*node name or module path"),
    # Today: accepted; every training-mode sample and the KL are then NaN.
    "a_nan_log_sigma_init": (MLPSigmoid, {"log_sigma_init": float("nan")}, r"log_sigma_init=nan.*finite"),
    # Today: AttributeError "'function' object has no attribute 'parameters'".
    "a_function_instead_of_a_module": (lambda: torch.tanh, {}, r"nn.Module"),
}


@pytest.mark.parametrize("name", MISUSE)
def test_misused_arguments_raise_an_input_error_and_leave_the_model_bit_identical(name: str) -> None:
    make, options, match = MISUSE[name]
    model = make()
    before = snapshot(lived_in(model)) if isinstance(model, nn.Module) else None
    with pytest.raises(fxvae.InputError, match=match):
        fxvae.convert(model, torch.randn(*MLP_X), **options)
    if before is not None:
        assert_unchanged(model, before)
