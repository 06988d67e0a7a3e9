"""How the bottleneck is chosen, ranked and forced."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxvae
from tests.zoo import ZOO, build

BY_NAME = {e.name: e for e in ZOO}


def _find(name: str, **kwargs: object) -> fxvae.Bottleneck:
    entry = BY_NAME[name]
    return fxvae.find_bottleneck(build(entry), entry.inputs(3), **kwargs)


def test_an_equal_width_chain_ends_after_the_layers_activations() -> None:
    b = _find("norm_dropout")
    assert b.node == "sigmoid" and b.chain == ("enc_3", "enc_4", "sigmoid")
    reasons = {c.node: c.reason for c in b.candidates}
    assert reasons["enc_3"] == "same width, inside 'enc': the latent is that module's output"


def test_a_bypassed_gate_is_ranked_with_the_edge_that_bypasses_it() -> None:
    b = _find("squeeze_excite")
    gate = {c.node: c for c in b.candidates}["gate_1"]
    assert not gate.separates and gate.width == 2
    assert gate.reason == "bypassed by relu -> mul"


def test_the_condition_input_of_a_conditional_ae_is_not_a_path_around_the_latent() -> None:
    b = _find("conditional")
    assert b.node == "enc_2" and b.shape == (4,)


def test_a_side_output_of_the_input_does_not_count_as_the_reconstruction() -> None:
    b = _find("dict_output")
    assert b.node == "enc_2"


def test_a_bottleneck_can_be_forced_by_module_path() -> None:
    b = _find("mlp_sigmoid", bottleneck="enc.1")
    assert (b.node, b.layer, b.shape) == ("enc_1", "enc.0", (32,))


def test_a_bottleneck_can_be_forced_by_node_name() -> None:
    b = _find("mlp_sigmoid", bottleneck="enc_2")
    assert (b.node, b.chain) == ("enc_2", ("enc_2",))


def test_a_whole_submodule_forced_means_its_output() -> None:
    b = _find("mlp_sigmoid", bottleneck="enc")
    assert b.node == "enc_3"


def test_forcing_a_bypassed_node_warns_with_the_edge() -> None:
    with pytest.warns(UserWarning, match="bypassed by relu -> mul"):
        _find("squeeze_excite", bottleneck="gate_1")


def test_the_export_path_resolves_module_paths_without_the_wrappers_prefix() -> None:
    b = _find("shape_control_flow", bottleneck="enc.0")
    assert b.tracer == "export" and b.layer == "enc.0"


def test_a_reshape_of_the_latent_in_the_decoder_is_not_chosen() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        nn.Tanh(),
        nn.Unflatten(1, (1, 4, 4)),
        nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
    )
    b = fxvae.find_bottleneck(model, torch.randn(2, 1, 8, 8))
    assert (b.node, b.layer) == ("_3", "2")


def test_find_bottleneck_does_not_change_the_model() -> None:
    entry = BY_NAME["norm_dropout"]
    model = build(entry).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxvae.find_bottleneck(model, entry.inputs(3))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_thousand_layer_autoencoder_is_analysed(tmp_path: object) -> None:
    layers = [nn.Linear(16, 16) for _ in range(500)] + [nn.Linear(16, 4)] + [nn.Linear(4, 4)]
    layers += [nn.Linear(4, 16)] + [nn.Linear(16, 16) for _ in range(497)]
    model = nn.Sequential(*layers)
    b = fxvae.find_bottleneck(model, torch.randn(2, 16))
    assert (b.node, b.width) == ("_500", 4)
