"""fxvae.ops.kl.kl_divergence against the torch.distributions oracle, on the torch backend.

tests/ops/triton_cases.py reruns the value tests on the Triton kernels (see test_kl_triton.py).
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

import fxvae.ops.kl as kl_module
from fxvae.errors import KLError
from fxvae.ops.kl import kl_divergence
from tests.ops.kl_oracle import (
    REDUCTIONS,
    TOLERANCES,
    assert_matches_oracle,
    free_bits_between,
    latents,
    loss_and_grads,
    oracle_per_dim,
)

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture
def backend() -> str:
    return "torch"


def _assert_matches_oracle(mu: torch.Tensor, log_sigma: torch.Tensor, backend: str, **kwargs: object) -> None:
    assert_matches_oracle(partial(kl_divergence, backend=backend), mu, log_sigma, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_and_gradients_match_torch_distributions(backend: str, reduction: str, dtype: torch.dtype) -> None:
    mu, log_sigma = latents((3, 5, 7), dtype)
    _assert_matches_oracle(mu, log_sigma, backend, reduction=reduction)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_beta_and_free_bits_match_the_oracle(backend: str, reduction: str, dtype: torch.dtype) -> None:
    mu, log_sigma = latents((6, 10), dtype)
    floor = free_bits_between(mu, log_sigma)
    _assert_matches_oracle(mu, log_sigma, backend, reduction=reduction, beta=0.3, free_bits=floor)


@pytest.mark.parametrize("shape", [(9,), (1, 1), (3, 5, 7), (2, 1, 3, 1), (1, 3000), (700, 3)], ids=str)
def test_odd_shapes_match_the_oracle(backend: str, shape: tuple[int, ...]) -> None:
    mu, log_sigma = latents(shape, torch.float32)
    for reduction in REDUCTIONS:
        _assert_matches_oracle(mu, log_sigma, backend, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradients_pass_gradcheck_in_float64(reduction: str) -> None:
    mu, log_sigma = latents((4, 3, 2))
    floor = free_bits_between(mu, log_sigma)
    for beta, free_bits in ((1.0, 0.0), (0.7, floor)):
        assert torch.autograd.gradcheck(
            lambda m, s, b=beta, f=free_bits: kl_divergence(m, s, reduction=reduction, beta=b, free_bits=f),
            (mu, log_sigma),
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_tiles_give_the_same_values_as_whole_tensors(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    mu, log_sigma = latents((5, 3, 7), dtype)
    floor = free_bits_between(mu, log_sigma)
    cases = [dict(reduction=r, free_bits=f) for r in REDUCTIONS for f in (0.0, floor)]
    whole = [loss_and_grads(mu, log_sigma, kl_divergence, **case) for case in cases]
    # Streaming from the first element; 8 elements per tile splits every row of 21 into column tiles too.
    monkeypatch.setattr(kl_module, "_SMALL", -1)
    monkeypatch.setattr(kl_module, "_chunk", lambda device: 8)
    tiled = [loss_and_grads(mu, log_sigma, kl_divergence, **case) for case in cases]
    for expected, actual in zip(whole, tiled, strict=True):
        for kind, e, a in zip(("loss", "grad", "grad"), expected, actual, strict=True):
            atol, rtol = TOLERANCES[dtype][kind]
            torch.testing.assert_close(a, e, atol=atol, rtol=rtol)


def test_beta_scales_loss_and_gradients(backend: str) -> None:
    mu, log_sigma = latents((4, 6), torch.float32)
    plain = loss_and_grads(mu, log_sigma, kl_divergence, grad_output=torch.tensor(1.0), backend=backend)
    scaled = loss_and_grads(mu, log_sigma, kl_divergence, grad_output=torch.tensor(1.0), backend=backend, beta=0.25)
    for p, s in zip(plain, scaled, strict=True):
        torch.testing.assert_close(s, 0.25 * p)


def test_free_bits_batchmean_is_the_iaf_objective(backend: str) -> None:
    mu, log_sigma = latents((8, 5))
    per_dim = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, log_sigma.exp()), torch.distributions.Normal(0.0, 1.0)
    ).mean(0)
    floor = free_bits_between(mu, log_sigma)
    expected = torch.clamp(per_dim, min=floor).sum()
    torch.testing.assert_close(kl_divergence(mu, log_sigma, free_bits=floor, backend=backend), expected)


def test_free_bits_zero_the_gradient_of_dimensions_below_the_floor(backend: str) -> None:
    mu, log_sigma = latents((8, 5))
    floor = free_bits_between(mu, log_sigma)
    floored = oracle_per_dim(mu, log_sigma) < floor
    kl_divergence(mu, log_sigma, free_bits=floor, backend=backend).backward()
    assert floored.any() and (~floored).any()
    assert (mu.grad[:, floored] == 0).all() and (log_sigma.grad[:, floored] == 0).all()
    assert (mu.grad[:, ~floored] != 0).all()


def test_free_bits_combine_the_same_way_in_every_reduction(backend: str) -> None:
    mu, log_sigma = latents((8, 5))
    floor = free_bits_between(mu, log_sigma)
    by = {r: kl_divergence(mu, log_sigma, reduction=r, free_bits=floor, backend=backend) for r in REDUCTIONS}
    torch.testing.assert_close(by["sum"], 8 * by["batchmean"])
    torch.testing.assert_close(by["mean"], by["batchmean"] / 5)
    torch.testing.assert_close(by["none"].mean(), by["batchmean"])


def test_free_bits_gradient_flows_at_a_tie_like_clamp(backend: str) -> None:
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    kl_divergence(mu, log_sigma, free_bits=0.5, backend=backend).backward()
    torch.testing.assert_close(mu.grad[:, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_non_contiguous_inputs_give_the_contiguous_values(backend: str) -> None:
    mu, log_sigma = latents((6, 4, 5), torch.float32)
    strided = mu.detach().transpose(0, 2)[:, ::2], log_sigma.detach().transpose(0, 2)[:, ::2]
    assert not strided[0].is_contiguous()
    for reduction in REDUCTIONS:
        expected = loss_and_grads(*(t.contiguous() for t in strided), kl_divergence, reduction=reduction)
        actual = loss_and_grads(*strided, kl_divergence, reduction=reduction, backend=backend)
        for e, a in zip(expected, actual, strict=True):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0,), (2, 0, 5)], ids=str)
def test_empty_inputs_give_zero_or_empty_and_empty_gradients(backend: str, shape: tuple[int, ...]) -> None:
    mu, log_sigma = latents(shape, torch.float32)
    for reduction in REDUCTIONS:
        out = kl_divergence(mu, log_sigma, reduction=reduction, free_bits=0.1, backend=backend)
        if reduction == "none":
            assert torch.equal(out, torch.zeros(shape[0]))
        else:
            assert out.shape == () and out.item() == 0.0
        grad_mu, grad_ls = torch.autograd.grad(out.sum(), (mu, log_sigma))
        assert grad_mu.shape == shape and grad_ls.shape == shape


def test_same_input_gives_the_same_bits_twice(backend: str) -> None:
    mu, log_sigma = latents((64, 300), torch.float32)
    for reduction in REDUCTIONS:
        first = loss_and_grads(mu, log_sigma, kl_divergence, reduction=reduction, backend=backend)
        second = loss_and_grads(mu, log_sigma, kl_divergence, reduction=reduction, backend=backend)
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_huge_log_sigma_gives_inf_not_nan(backend: str, dtype: torch.dtype) -> None:
    mu = torch.zeros(2, 3, dtype=dtype, requires_grad=True)
    log_sigma = torch.tensor([[0.0, 1e4, 0.0], [math.inf, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    out = kl_divergence(mu, log_sigma, reduction="none", backend=backend)
    out.sum().backward()
    assert torch.equal(out, torch.full((2,), math.inf, dtype=dtype))
    assert not log_sigma.grad.isnan().any() and log_sigma.grad[0, 1] == math.inf


def test_very_negative_log_sigma_stays_finite_and_minus_inf_gives_inf(backend: str) -> None:
    mu = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor([[-1e4, -math.inf]], dtype=torch.float64, requires_grad=True)
    out = kl_divergence(mu, log_sigma, reduction="none", backend=backend)
    out.sum().backward()
    assert out.item() == math.inf
    finite = kl_divergence(mu[:, :1], log_sigma[:, :1], backend=backend)
    torch.testing.assert_close(finite, torch.tensor(1e4 - 0.5, dtype=torch.float64))
    torch.testing.assert_close(log_sigma.grad, torch.tensor([[-1.0, -1.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_inputs_give_a_float32_loss_and_gradients_in_their_dtype(backend: str, dtype: torch.dtype) -> None:
    # 4096 elements of KL 2: a float16 sum would overflow at 65504, float32 does not.
    mu = torch.full((64, 64), 2.0, dtype=dtype, requires_grad=True)
    log_sigma = torch.zeros(64, 64, dtype=dtype, requires_grad=True)
    out = kl_divergence(mu, log_sigma, reduction="sum", backend=backend)
    out.backward()
    assert out.dtype == torch.float32 and out.item() == 2.0 * 64 * 64
    assert mu.grad.dtype == dtype and log_sigma.grad.dtype == dtype


# Whole tensors on the torch backend, and tiles streamed.
@pytest.mark.parametrize("shape", [(16, 32), (3, kl_module._SMALL // 2)], ids=str)
def test_only_the_inputs_are_saved_for_backward(backend: str, shape: tuple[int, ...]) -> None:
    mu, log_sigma = latents(shape, torch.float32)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kl_divergence(mu, log_sigma, backend=backend)
    assert saved == [mu.numel(), log_sigma.numel()]


def test_only_the_requested_gradients_are_computed(backend: str) -> None:
    mu, log_sigma = latents((4, 5), torch.float32)
    log_sigma = log_sigma.detach()
    kl_divergence(mu, log_sigma, backend=backend).backward()
    torch.testing.assert_close(mu.grad, mu.detach() / 4)


def test_mismatched_shapes_raise_instead_of_broadcasting() -> None:
    with pytest.raises(KLError, match=r"mu has shape \(2, 3\) but log_sigma has \(1, 3\)"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(1, 3))


def test_mismatched_dtypes_raise() -> None:
    with pytest.raises(KLError, match=r"mu is torch\.float32 but log_sigma is torch\.float64"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))


def test_integer_inputs_raise() -> None:
    with pytest.raises(KLError, match=r"mu has dtype torch\.int64; pass a floating-point tensor"):
        kl_divergence(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))


def test_non_tensor_inputs_raise() -> None:
    with pytest.raises(KLError, match=r"log_sigma must be a torch\.Tensor, got list"):
        kl_divergence(torch.zeros(2), [0.0, 0.0])


def test_scalar_inputs_raise() -> None:
    with pytest.raises(KLError, match=r"scalars; pass tensors of shape \(batch, ...\)"):
        kl_divergence(torch.tensor(0.0), torch.tensor(0.0))


def test_unknown_reduction_raises() -> None:
    with pytest.raises(KLError, match="unknown reduction 'avg'; use 'none', 'sum', 'mean' or 'batchmean'"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")


def test_unknown_backend_raises() -> None:
    with pytest.raises(KLError, match="unknown backend 'cuda'; use 'auto', 'triton' or 'torch'"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), backend="cuda")


def test_negative_free_bits_raise() -> None:
    with pytest.raises(KLError, match="free_bits must be a finite number >= 0"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), free_bits=-0.1)


def test_triton_backend_on_cpu_without_the_interpreter_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    expected = r"backend='triton' cannot run: the tensors are on cpu.*TRITON_INTERPRET=1"
    with pytest.raises(KLError, match=expected):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), backend="triton")


def test_triton_backend_without_triton_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'triton'")

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(kl_module, "_triton_kernels", missing)
    with pytest.raises(KLError, match=r"triton cannot be imported .*pip install 'fxvae\[triton\]'"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), backend="triton")


def test_auto_backend_on_cpu_runs_torch_without_importing_triton() -> None:
    code = (
        "import sys, torch; from fxvae.ops.kl import kl_divergence; "
        "kl_divergence(torch.ones(2, 3), torch.zeros(2, 3)); print('triton' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_importing_the_ops_package_does_not_import_triton() -> None:
    code = "import sys, fxvae.ops; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_kernels_take_their_constants_from_kl_constants_not_from_the_torch_path() -> None:
    source = Path(kl_module.__file__).with_name("kl_triton.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "fxvae.ops.kl_constants" in imported and "fxvae.ops.kl" not in imported


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triton_on_cuda_matches_torch_on_cuda(reduction: str) -> None:
    pytest.importorskip("triton")
    mu, log_sigma = latents((33, 257), torch.float32)
    mu, log_sigma = mu.detach().cuda(), log_sigma.detach().cuda()
    floor = free_bits_between(mu, log_sigma)
    for free_bits in (0.0, floor):
        kwargs = dict(reduction=reduction, free_bits=free_bits)
        auto = loss_and_grads(mu, log_sigma, kl_divergence, grad_output=None, **kwargs)
        torch_path = loss_and_grads(mu, log_sigma, kl_divergence, backend="torch", **kwargs)
        for a, t in zip(auto, torch_path, strict=True):
            torch.testing.assert_close(a, t)
