"""State across calls: kl() and posterior() read the latest forward; conversions in two threads.

torch.compile'd and DDP-wrapped VAEs: tests/test_compile.py (train mode, inductor) and tests/test_ddp.py
(two processes, no find_unused_parameters); what they do not cover is here.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxvae
from tests.zoo import ZOO, build

MLP = next(e for e in ZOO if e.name == "mlp_sigmoid")


def _batch(seed: int) -> torch.Tensor:
    return torch.randn(4, 64, generator=torch.Generator().manual_seed(seed))


def _vae() -> tuple[torch.fx.GraphModule, fxvae.KLDivergence]:
    return fxvae.convert(build(MLP), _batch(0), log_sigma_init=-1.0)


def test_kl_after_two_forwards_is_the_second_forwards_kl() -> None:
    vae, kl = _vae()
    vae.train()
    vae(_batch(2))
    alone = kl()
    vae(_batch(1))
    vae(_batch(2))
    assert torch.equal(kl(), alone)
    vae(_batch(1))
    assert not torch.equal(kl(), alone)


def test_gradient_accumulation_calls_kl_after_each_forward() -> None:
    # The posterior is module state that the next forward replaces, so each micro-batch's loss must
    # take its kl() before the next forward; the accumulated gradient is then the sum of the parts.
    vae, kl = _vae()
    vae.train()
    params = list(vae.parameters())

    def grads_of(*seeds: int) -> list[torch.Tensor]:
        vae.zero_grad()
        for seed in seeds:
            x = _batch(seed)
            torch.manual_seed(seed)  # the same reparameterisation noise in every run
            (F.mse_loss(vae(x), x) + kl()).backward()
        return [p.grad.clone() for p in params]

    first, second, accumulated = grads_of(1), grads_of(2), grads_of(1, 2)
    for a, b, total in zip(first, second, accumulated, strict=True):
        torch.testing.assert_close(total, a + b)


def test_kl_after_an_eval_forward_equals_the_train_forwards_kl_on_the_same_input() -> None:
    # An eval forward only keeps the log-sigma head's input; kl() runs the head when asked.
    vae, kl = _vae()
    x = _batch(3)
    with torch.no_grad():
        vae.eval()(x)
    after_eval = kl()
    vae.train()(x)
    assert torch.equal(after_eval, kl())
    assert after_eval.requires_grad  # the head runs outside the no_grad block, so it can be trained on


def test_kl_after_an_eval_forward_uses_the_log_sigma_head_as_it_is_when_kl_is_called() -> None:
    # The documented consequence of computing log sigma on demand: take kl() before an optimizer step.
    vae, kl = _vae()
    vae.eval()(_batch(3))
    before = kl()
    head = vae.get_submodule(fxvae.conversion(vae).log_sigma_head)
    with torch.no_grad():
        head.bias.add_(0.5)
    vae.eval()(_batch(3))
    assert not torch.equal(kl(), before)


def test_a_copied_vae_starts_without_a_posterior() -> None:
    vae, kl = _vae()
    vae.train()(_batch(1))
    twin = copy.deepcopy(vae)
    with pytest.raises(fxvae.FxvaeError, match=r"the VAE has not run yet: call vae\(\*inputs\) before"):
        fxvae.posterior(twin)
    assert kl().isfinite()  # the original keeps its own


def test_a_compiled_vae_in_eval_mode_leaves_the_posterior_for_kl() -> None:
    # Dynamo has to replay the module-state write (the kept head input) after the compiled graph; the
    # "eager" backend exercises exactly that capture without inductor's compile time.
    vae, kl = _vae()
    reference, reference_kl = _vae()
    compiled = torch.compile(vae, backend="eager")
    for seed in (1, 2):
        with torch.no_grad():
            compiled.eval()(_batch(seed))
            reference.eval()(_batch(seed))
        assert torch.equal(kl(), reference_kl())


class Gated(nn.Module):
    """An AE whose symbolic trace pauses until told to go on: another thread converts in that window."""

    # Class attributes: convert deep-copies the model, and events (locks) cannot be copied.
    tracing = threading.Event()
    go_on = threading.Event()

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(16, 3), nn.Linear(3, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            Gated.tracing.set()
            # Bounded: a conversion that correctly waits for this one's capture cannot set go_on.
            Gated.go_on.wait(timeout=1.0)
        return self.dec(torch.tanh(self.enc(x)))


def test_two_threads_converting_different_models_at_once_both_get_the_right_vae() -> None:
    Gated.tracing, Gated.go_on = threading.Event(), threading.Event()
    gated, x_gated = Gated().eval(), torch.randn(3, 16)
    other, x_other = build(MLP), _batch(4)
    results: dict[str, object] = {}

    def convert(name: str, model: nn.Module, x: torch.Tensor) -> None:
        try:
            results[name] = fxvae.convert(model, x)[0]
        except Exception as err:  # reported by the assertions below, with the thread's error
            results[name] = err
        finally:
            if name == "other":
                Gated.go_on.set()

    first = threading.Thread(target=convert, args=("gated", gated, x_gated))
    first.start()
    assert Gated.tracing.wait(timeout=30)
    second = threading.Thread(target=convert, args=("other", other, x_other))
    second.start()
    first.join()
    second.join()
    for name, model, x in (("gated", gated, x_gated), ("other", other, x_other)):
        vae = results[name]
        assert isinstance(vae, torch.fx.GraphModule), f"{name}: {vae!r}"
        with torch.no_grad():
            assert torch.equal(vae.eval()(x), model(x)), name
    assert fxvae.conversion(results["other"]).bottleneck.node == MLP.bottleneck
