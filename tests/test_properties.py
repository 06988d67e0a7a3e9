"""Properties of fxvae.convert on random autoencoders whose bottleneck is known by construction.

The zoo (tests/zoo.py) pins one model per shape of the problem; these tests draw hundreds of models
from tests/random_aes.py (MLP and 1-3-d conv, norms, dropout, residual blocks, skips, side outputs,
conditions, functional layers, Sequential or hand-written forwards) and check that the contract holds
for all of them. A failing example prints as a standalone script (the "note" in the report).

Profiles (tests/conftest.py): the default, derandomized "fast" one for CI; HYPOTHESIS_PROFILE=long
for a deeper search. Select the suite with ``-m properties``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.fx as fx
from hypothesis import assume, given, note
from hypothesis import strategies as st
from torch import nn

import fxvae
from tests.random_aes import AECase, autoencoders, leaves, reconstruction

pytestmark = pytest.mark.properties


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models on 2 shared cores run many times faster on one thread (DESIGN-NOTES, overhead)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _convert(case: AECase, **options: float) -> tuple[nn.Module, tuple, fx.GraphModule, fxvae.KLDivergence]:
    note(case.script())
    model = case.build().eval()
    args = case.inputs()
    vae, kl = fxvae.convert(model, args, **options)
    return model, args, vae, kl


def _train_step(vae: fx.GraphModule, kl: fxvae.KLDivergence, args: tuple) -> None:
    vae.train()
    opt = torch.optim.SGD(vae.parameters(), lr=0.05)
    loss = reconstruction(vae(*args), args[0]).pow(2).mean() + kl()
    loss.backward()
    opt.step()


# --- (1) the bottleneck is the constructed latent -------------------------------------------------------


@given(case=autoencoders())
def test_the_bottleneck_found_is_the_constructed_latent(case: AECase) -> None:
    note(case.script())
    model = case.build().eval()
    args = case.inputs()
    found = fxvae.find_bottleneck(model, args)
    assert found.width == case.latent_width, f"found {found.node} {list(found.shape)}"
    expected = case.latent(model, args)
    vae, _ = fxvae.convert(model, args)
    vae.eval()
    with torch.no_grad():
        vae(*args)
    mu = fxvae.posterior(vae).mu
    assert mu.shape == expected.shape, f"mu {list(mu.shape)} at {found.node}, latent {list(expected.shape)}"
    assert torch.equal(mu, expected), f"mu at {found.node} differs by {(mu - expected).abs().max():.3g}"


# --- (2) eval mode is the autoencoder ---------------------------------------------------------------------


@given(case=autoencoders(), extra=st.integers(1, 3))
def test_eval_outputs_equal_the_autoencoders_at_two_batch_sizes(case: AECase, extra: int) -> None:
    model, _, vae, _ = _convert(case)
    vae.eval()
    for batch in (case.batch, case.batch + extra):
        args = case.inputs(batch)
        with torch.no_grad():
            got, expected = leaves(vae(*args)), leaves(model(*args))
        assert [path for path, _ in got] == [path for path, _ in expected]
        for (path, g), (_, e) in zip(got, expected, strict=True):
            assert g.shape == e.shape, f"{path} at batch {batch}"
            if e.is_floating_point():
                assert (g - e).abs().max() <= 1e-6, f"{path} at batch {batch}"


# --- (3) train mode samples ---------------------------------------------------------------------------------


def _record_latents(vae: fx.GraphModule) -> list[torch.Tensor]:
    """The sampled z of every forward, as the reparameterisation returns it."""
    latents: list[torch.Tensor] = []
    module = vae.get_submodule(fxvae.conversion(vae).reparameterize)
    module.register_forward_hook(lambda _m, _args, z: latents.append(z))
    return latents


@given(case=autoencoders())
def test_train_mode_draws_a_new_reconstruction_per_seed(case: AECase) -> None:
    _, args, vae, _ = _convert(case)
    vae.train()
    latents = _record_latents(vae)
    torch.manual_seed(1)
    first = reconstruction(vae(*args), args[0])
    torch.manual_seed(2)
    second = reconstruction(vae(*args), args[0])
    if torch.equal(first, second):
        # Legitimate only where the decoder is flat at both samples (every ReLU off, everything dropped).
        flat = [
            torch.autograd.grad(r.pow(2).sum(), z, allow_unused=True)[0]
            for r, z in zip((first, second), latents, strict=True)
        ]
        assume(not all(g is not None and not g.any() for g in flat))
    assert not torch.equal(first, second)


# --- (4) the KL at initialisation --------------------------------------------------------------------------


@given(case=autoencoders())
def test_kl_right_after_conversion_is_half_the_mean_squared_norm_of_mu(case: AECase) -> None:
    """log_sigma_init=0 and a zero log-sigma weight: sigma = 1, so KL = 1/2 sum mu^2 per sample."""
    _, args, vae, kl = _convert(case)
    vae.train()
    vae(*args)
    mu = fxvae.posterior(vae).mu
    torch.testing.assert_close(kl(), 0.5 * mu.pow(2).flatten(1).sum(1).mean())


# --- (5) gradients ------------------------------------------------------------------------------------------


@given(case=autoencoders())
def test_a_training_loss_reaches_the_log_sigma_head_and_every_parameter(case: AECase) -> None:
    _, args, vae, kl = _convert(case)
    head = vae.get_submodule(fxvae.conversion(vae).log_sigma_head)
    vae.train()
    torch.manual_seed(3)
    (reconstruction(vae(*args), args[0]).pow(2).mean() + kl()).backward()
    assert [name for name, p in vae.named_parameters() if p.grad is None] == []
    if not head.weight.grad.any():
        # Legitimate only where this sample's reconstruction does not depend on the head's weight: the
        # head reads zeros (ReLUs off, everything dropped) or the decoder is flat there. Same draws again.
        with torch.no_grad():
            torch.manual_seed(3)
            before = reconstruction(vae(*args), args[0])
            head.weight.add_(1e-3 * torch.randn_like(head.weight))
            torch.manual_seed(3)
            assume(not torch.equal(before, reconstruction(vae(*args), args[0])))
    assert head.weight.grad.any()


# --- (6) the autoencoder is never touched ---------------------------------------------------------------


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], list[bool]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _same(before: tuple, model: nn.Module) -> bool:
    state, flags, grads = before
    now_state, now_flags, now_grads = _snapshot(model)
    same_state = list(now_state) == list(state) and all(torch.equal(state[k], now_state[k]) for k in state)
    return same_state and now_flags == flags and now_grads == grads


@given(case=autoencoders(), data=st.data())
def test_converting_and_training_the_vae_leave_the_autoencoder_unchanged(case: AECase, data: st.DataObject) -> None:
    """Also with mixed train/eval flags and frozen parameters, which a fine-tuning script may leave."""
    note(case.script())
    model = case.build()
    modules, params = list(model.modules()), list(model.parameters())
    flags = data.draw(st.lists(st.booleans(), min_size=len(modules), max_size=len(modules)), label="training")
    frozen = data.draw(st.lists(st.booleans(), min_size=len(params), max_size=len(params)), label="frozen")
    for module, flag in zip(modules, flags, strict=True):
        module.training = flag
    for p, freeze in zip(params, frozen, strict=True):
        p.requires_grad_(not freeze)
    before = _snapshot(model)
    args = case.inputs()
    vae, kl = fxvae.convert(model, args)
    assert _same(before, model), "convert changed the autoencoder"
    _train_step(vae, kl, args)
    assert _same(before, model), "a training step of the VAE changed the autoencoder"


# --- (7) save / load ----------------------------------------------------------------------------------------


@given(case=autoencoders())
def test_save_then_load_is_bit_exact(case: AECase) -> None:
    _, args, vae, kl = _convert(case, log_sigma_init=-1.5)
    _train_step(vae, kl, args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vae.safetensors"
        fxvae.save(vae, path)
        loaded, _ = fxvae.load(case.build(seed=case.seed + 1), path, args)
    expected, got = vae.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    assert [k for k in expected if not torch.equal(got[k], expected[k])] == []
    vae.eval()
    loaded.eval()
    with torch.no_grad():
        outputs = zip(leaves(loaded(*args)), leaves(vae(*args)), strict=True)
        assert all(p == q and torch.equal(g, e) for (p, g), (q, e) in outputs)


# --- (8) split ----------------------------------------------------------------------------------------------


@given(case=autoencoders())
def test_decoder_of_the_encoders_mu_reproduces_the_eval_reconstruction(case: AECase) -> None:
    _, args, vae, _ = _convert(case)
    vae.eval()
    encoder, decoder = fxvae.split(vae)
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        expected = vae(*args)
        mu, _ = encoder(*args)
        got = dict(leaves(decoder(mu, *args[1:])))
    (path, recon), *_ = [(p, t) for p, t in leaves(expected) if t.shape == args[0].shape]
    assert path in got and torch.equal(got[path], recon)


# --- a skip around the narrow point ------------------------------------------------------------------------


@given(case=autoencoders(bypass=True))
def test_a_skip_around_the_narrow_point_raises_bottleneck_error(case: AECase) -> None:
    note(case.script())
    with pytest.raises(fxvae.BottleneckError):
        fxvae.convert(case.build().eval(), case.inputs())


# --- the generator keeps its promises --------------------------------------------------------------------


def _swap_latent(case: AECase, model: nn.Module, args: tuple, other: tuple) -> torch.Tensor:
    """The reconstruction of ``args`` when the latent module returns its output for ``other`` instead."""
    replacement = case.latent(model, other)
    hook = model.get_submodule(case.latent_module).register_forward_hook(lambda *_: replacement)
    try:
        with torch.no_grad():
            return reconstruction(model(*args), args[0])
    finally:
        hook.remove()


@given(case=autoencoders())
def test_generated_latent_is_the_only_way_from_input_to_reconstruction(case: AECase) -> None:
    """Guards the ground truth: swap in another input's latent and the reconstruction is that input's.

    (DESIGN-NOTES: a separator test that needs no graph.) Also: the latent is narrower than the input.
    """
    note(case.script())
    model = case.build().eval()
    args = case.inputs()
    other = (case.inputs(seed=case.seed + 2)[0], *args[1:])
    assert case.latent(model, args).shape[1:] == case.latent_shape
    assert case.latent_width < case.input_width
    with torch.no_grad():
        expected = reconstruction(model(*other), args[0])
    assert torch.equal(_swap_latent(case, model, args, other), expected)


@given(case=autoencoders(bypass=True))
def test_generated_bypass_carries_the_input_around_the_latent(case: AECase) -> None:
    note(case.script())
    model = case.build().eval()
    args = case.inputs()
    other = (case.inputs(seed=case.seed + 2)[0], *args[1:])
    with torch.no_grad():
        expected = reconstruction(model(*other), args[0])
    assert not torch.equal(_swap_latent(case, model, args, other), expected)
