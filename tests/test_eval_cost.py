"""In eval mode the VAE computes exactly what the AE computes: no log-sigma head, in eager code and exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import fxvae
from fxvae.analysis.outputs import FlatOutputs, tensors
from fxvae.capture.tracing import trace
from tests.zoo import ZOO, ZooEntry, build

GRAPH_TIERS = [e for e in ZOO if e.name != "recurrent"]
"""The recurrent AE's LSTM exports to a different op set depending on the module around it."""


def _export_ops(module: nn.Module, args: tuple[object, ...]) -> list[str]:
    program = torch.export.export(FlatOutputs(module.eval()), args, strict=False)
    return sorted(str(n.target) for n in program.graph.nodes if n.op == "call_function")


@pytest.mark.parametrize("entry", GRAPH_TIERS, ids=lambda e: e.name)
def test_the_eval_export_has_the_aes_operators(entry: ZooEntry) -> None:
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4))
    # The AE as captured: for the export tier, torch.export already folded its Python shape arithmetic.
    captured = trace(model, entry.inputs(4)).graph_module
    assert _export_ops(vae, entry.inputs(4)) == _export_ops(captured, entry.inputs(4))


def test_the_eval_onnx_export_has_the_aes_node_count(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    entry = next(e for e in ZOO if e.name == "conv_latent")
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4))
    fxvae.export_onnx(vae, tmp_path / "vae.onnx", entry.inputs(4))
    fxvae.export_onnx(model, tmp_path / "ae.onnx", entry.inputs(4))
    counts = [len(onnx.load(str(tmp_path / f"{m}.onnx")).graph.node) for m in ("vae", "ae")]
    assert counts[0] == counts[1]


def test_an_eager_eval_forward_never_calls_the_log_sigma_head() -> None:
    entry = ZOO[0]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    calls = []
    vae.get_submodule("log_sigma_head").register_forward_hook(lambda *_: calls.append(1))
    vae.eval()(*entry.inputs(4))
    assert calls == []
    vae.train()(*entry.inputs(4))
    assert calls == [1]


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_the_posterior_after_an_eval_forward_is_the_encoders(entry: ZooEntry) -> None:
    vae, kl = fxvae.convert(build(entry), entry.inputs(4), log_sigma_init=-0.5)
    with torch.no_grad():
        nn.init.normal_(vae.get_submodule("log_sigma_head").weight, std=0.1)
    args = entry.inputs(4)
    encoder, _ = fxvae.split(vae.eval())
    mu, log_sigma = encoder(*args)
    vae(*args)
    post = fxvae.posterior(vae)
    torch.testing.assert_close(post.mu, mu)
    torch.testing.assert_close(post.log_sigma, log_sigma)
    assert not torch.allclose(log_sigma, torch.full_like(log_sigma, -0.5))
    torch.testing.assert_close(kl(), fxvae.kl_divergence(mu, log_sigma))


def test_the_kl_after_an_eval_forward_has_a_gradient_for_the_head() -> None:
    entry = ZOO[0]
    vae, kl = fxvae.convert(build(entry), entry.inputs(4))
    vae.eval()(*entry.inputs(4))
    kl().backward()
    assert vae.get_parameter("log_sigma_head.bias").grad is not None
    assert all(t.requires_grad for t in tensors((fxvae.posterior(vae).mu,)))
