"""fxvae's contract on real third-party autoencoders (the table in tests/integration/models.py).

The unit tests' zoo is written to exercise one conversion problem at a time; these models were written
by others, for their own fields, and combine the problems: residual and attention blocks at the latent,
weight norm, quantisers, shape-computed padding, ModelOutput classes. Every test asserts the contract
itself (no xfail): a red test here is a model fxvae does not yet convert correctly. Install the
packages with ``scripts/install-dev.sh``; an entry whose package is missing is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import fxvae
from fxvae.analysis.outputs import tensors as flatten_outputs
from tests.integration.models import AUTOENCODERS, UNETS, Inputs, RealModel

BATCH = 2
"""The example batch every conversion sees."""
OTHER_BATCH = 3
"""A second batch size: a VAE traced at one batch size is used at another."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Small models on 2 shared cores run several times faster on one thread (DESIGN-NOTES).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(entries: tuple[RealModel, ...]) -> list[pytest.ParameterSet]:
    return [pytest.param(e, id=e.name) for e in entries]


_CONVERTED: dict[str, tuple[nn.Module, fx.GraphModule] | Exception] = {}


def _converted(entry: RealModel) -> tuple[nn.Module, fx.GraphModule]:
    """The AE and its VAE in eval mode, converted once and shared by the tests that only run them.

    A failed conversion is remembered too, so that each test reports it without paying for it again.
    """
    pytest.importorskip(entry.package)
    if entry.name not in _CONVERTED:
        try:
            ae = entry.build()
            vae, _ = fxvae.convert(ae, entry.inputs(BATCH))
            _CONVERTED[entry.name] = (ae, vae.eval())
        except Exception as err:
            _CONVERTED[entry.name] = err
    found = _CONVERTED[entry.name]
    if isinstance(found, Exception):
        raise found
    return found


def _fresh_conversion(entry: RealModel, inputs: Inputs) -> tuple[fx.GraphModule, fxvae.KLDivergence]:
    """A VAE of its own for a test that changes it; a model that failed to convert is not tried again."""
    found = _CONVERTED.get(entry.name)
    if isinstance(found, Exception):
        raise found
    pytest.importorskip(entry.package)
    return fxvae.convert(entry.build(), inputs)


def _max_abs_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape, f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
    return (got - expected).abs().max().item()


def _recon_loss(entry: RealModel, out: object, inputs: Inputs) -> torch.Tensor:
    recon = entry.recon(out)
    return F.mse_loss(recon, inputs[0].reshape(recon.shape))


@pytest.mark.parametrize("entry", _params(AUTOENCODERS))
@pytest.mark.parametrize("batch", [BATCH, OTHER_BATCH])
def test_eval_reconstruction_equals_the_autoencoders(entry: RealModel, batch: int) -> None:
    ae, vae = _converted(entry)
    x = entry.inputs(batch)
    with torch.no_grad():
        assert _max_abs_diff(entry.recon(vae(*x)), entry.recon(ae(*x))) <= 1e-6


@pytest.mark.parametrize("entry", _params(AUTOENCODERS))
def test_posterior_mean_is_the_autoencoders_own_encoder_output(entry: RealModel) -> None:
    ae, vae = _converted(entry)
    assert entry.encode is not None
    x = entry.inputs(BATCH)
    with torch.no_grad():
        vae(*x)
        expected = entry.encode(ae, x)
    assert _max_abs_diff(fxvae.posterior(vae).mu, expected) <= 1e-6, entry.encoder_part


def _ae_parameters_without_gradient(entry: RealModel, inputs: Inputs) -> set[str]:
    """AE parameters a reconstruction loss leaves without a gradient in the AE itself.

    A VQ codebook read through a straight-through estimator learns from its own codebook loss (or EMA),
    not from the reconstruction: the VAE cannot be asked to do better than its AE there.
    """
    ae = entry.build().train()
    _recon_loss(entry, ae(*inputs), inputs).backward()
    return {name for name, p in ae.named_parameters() if p.grad is None}


@pytest.mark.parametrize("entry", _params(AUTOENCODERS))
def test_training_step_gives_finite_loss_and_gradients_on_every_parameter(entry: RealModel) -> None:
    x = entry.inputs(BATCH)
    vae, kl = _fresh_conversion(entry, x)
    key_map = fxvae.conversion(vae).key_map
    exempt = {key_map.get(name, name) for name in _ae_parameters_without_gradient(entry, x)}
    optimizer = torch.optim.SGD(vae.parameters(), lr=1e-3)
    vae.train()
    loss = _recon_loss(entry, vae(*x), x) + kl()
    loss.backward()
    assert math.isfinite(loss.item())
    without = [
        name
        for name, p in vae.named_parameters()
        if name not in exempt and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not without, f"no finite gradient for {without[:8]} (exempt, as in the AE: {sorted(exempt)})"
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in vae.parameters())


@pytest.mark.parametrize("entry", _params(AUTOENCODERS))
def test_save_then_load_is_bit_exact(entry: RealModel, tmp_path: Path) -> None:
    x = entry.inputs(BATCH)
    vae, _ = _fresh_conversion(entry, x)
    # Move every weight off the factory's initialisation: a load that ignored the file would still match.
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=noise, dtype=p.dtype))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, _ = fxvae.load(entry.build, tmp_path / "vae.safetensors", x)
    saved_state, loaded_state = vae.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(saved_state)
    assert all(torch.equal(loaded_state[k], v) for k, v in saved_state.items())
    vae.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(entry.recon(loaded(*x)), entry.recon(vae(*x)))


@pytest.mark.parametrize("entry", _params(AUTOENCODERS))
def test_split_decoder_of_the_encoders_mean_reproduces_the_vae(entry: RealModel) -> None:
    _, vae = _converted(entry)
    encoder, decoder = fxvae.split(vae)
    x = entry.inputs(OTHER_BATCH)
    with torch.no_grad():
        expected = entry.recon(vae(*x))
        mu, _ = encoder(*x)
        got = entry.recon(decoder(mu, *x[1:]))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("entry", _params(tuple(e for e in AUTOENCODERS if e.ae_exports_to_onnx)))
def test_onnx_export_matches_pytorch_at_another_batch_size(entry: RealModel, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _, vae = _converted(entry)
    fxvae.export_onnx(vae, tmp_path / "vae.onnx", entry.inputs(BATCH))
    session = ort.InferenceSession(str(tmp_path / "vae.onnx"))
    x = entry.inputs(OTHER_BATCH)
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), x, strict=True)})
    with torch.no_grad():
        out = vae(*x)
    flat = flatten_outputs(out)
    recon = entry.recon(out)
    index = next(i for i, t in enumerate(flat) if t is recon)
    assert len(got) == len(flat)
    torch.testing.assert_close(torch.from_numpy(got[index]), recon, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("entry", _params(UNETS))
def test_unet_is_refused_because_its_skips_bypass_the_narrowest_node(entry: RealModel) -> None:
    pytest.importorskip(entry.package)
    with pytest.raises(fxvae.BottleneckError, match="bypasses"):
        fxvae.convert(entry.build(), entry.inputs(BATCH))
