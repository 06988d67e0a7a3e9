"""KL(N(mu, sigma^2) || N(0, I)) for a diagonal Gaussian parametrised by mu and log sigma.

Forward reads each input once and reduces; backward is closed form and reads each input once more,
so only ``mu`` and ``log_sigma`` are saved for backward. The torch backend runs a small input as a
handful of whole-tensor ops and streams a large one in cache-sized chunks through a few in-place ops;
the Triton backend (``fxvae.ops.kl_triton``, imported on first use only) does each direction in one
kernel. Both take their constants from ``fxvae.ops.kl_constants``.

>>> mu, log_sigma = torch.randn(4, 8, requires_grad=True), torch.zeros(4, 8, requires_grad=True)
>>> loss = kl_divergence(mu, log_sigma, beta=0.5, free_bits=0.1)
>>> loss.backward()
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from functools import cache, partial
from types import ModuleType
from typing import Any, Literal, get_args

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from fxvae.errors import KLError
from fxvae.ops.kl_constants import LN_2, LOG2_SIGMA2_CAP, TWO_LOG2_E

Reduction = Literal["none", "sum", "mean", "batchmean"]
Backend = Literal["auto", "triton", "torch"]
_REDUCTIONS = get_args(Reduction)
Axis = Literal["rows", "cols", "all"]
# sums(axis, keep, floor) of one input: the per-sample, per-dimension or total KL (see _torch_sums).
Sums = Callable[[Axis, torch.Tensor | None, float], torch.Tensor]

# Tiles of this many elements keep the scratch in L2, so the few ops run per tile never go to DRAM
# (benchmarks/kl_cpu_variants.py measures the choice, docs/kl.md).
_CPU_CHUNK = 1 << 17
# On a GPU every op is a kernel launch; chunks only bound the temporaries.
_DEVICE_CHUNK = 1 << 22
# Up to this many elements the torch backend runs a handful of whole-tensor ops, with no tiles: a small
# loss pays for per-op overhead, not bandwidth. Measured on CPU, one thread (benchmarks/kl_small.py,
# docs/kl.md): whole tensors beat the tiles up to 2^18 elements and lose to them from 3 * 2^17 on.
_SMALL = 1 << 18
# Constants of the elementwise ops as 0-d CPU tensors, by (value, computing dtype): ATen applies one in
# about half the time it takes for a Python float, which it first wraps in a new tensor (same bits). A
# few microseconds a call on small losses; CUDA tensors take 0-d CPU tensors too.
_SCALARS = {
    (value, dtype): torch.tensor(value, dtype=dtype)
    for value in (TWO_LOG2_E, 1.0, 0.5)
    for dtype in (torch.float32, torch.float64)
}


def kl_divergence(
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    *,
    reduction: Reduction = "batchmean",
    beta: float = 1.0,
    free_bits: float = 0.0,
    backend: Backend = "auto",
) -> torch.Tensor:
    """KL divergence of N(mu, exp(log_sigma)^2) from N(0, I), fused forward and closed-form backward.

    Per element ``k = 1/2 * (mu^2 + sigma^2 - 2 log sigma - 1)`` with ``sigma = exp(log_sigma)``
    (log *sigma*, not log variance). Dimension 0 of ``mu`` and ``log_sigma`` is the batch ``B``; the
    other ``D`` elements of a sample are its latent dimensions. The result, times ``beta``, is

    - ``"none"``: per sample, summed over latent dimensions, shape ``(B,)``;
    - ``"sum"``: over all elements;
    - ``"mean"``: over all elements, divided by ``B * D``;
    - ``"batchmean"`` (default): the sum divided by ``B``, the usual VAE KL term.

    Free bits (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow",
    appendix C): with ``free_bits = lambda > 0`` each latent dimension ``j`` pays at least ``lambda`` nats,
    ``sum_j max(lambda, KL_j)`` where ``KL_j = 1/B * sum_b k[b, j]`` is its minibatch mean. Each latent
    coordinate is its own group. Every reduction uses the same rule: the elements of a dimension with
    ``KL_j < lambda`` count as the constant ``lambda`` and get zero gradient; the others count as
    themselves. So ``"batchmean"`` is exactly the IAF objective, ``"sum"`` is ``B`` times it, ``"mean"``
    is it divided by ``D``, and ``"none"`` gives per-sample values whose batch mean is it. At a tie
    (``KL_j == lambda``) the gradient flows, as in ``torch.clamp``.

    Dtypes and numerics: float16 and bfloat16 inputs are computed and accumulated in float32 and give a
    float32 loss (a float16 sum overflows at 65504); float32 gives float32, float64 gives float64.
    Gradients have the input dtype. ``sigma^2`` is computed as ``exp2(2 log2(e) log sigma)``. A large
    ``log_sigma`` overflows ``sigma^2`` to ``+inf``, so the loss is ``+inf`` (the true value rounded),
    never NaN, also for ``log_sigma = +inf``; ``log_sigma = -inf`` gives ``+inf`` with gradient
    ``-grad``. NaN inputs give NaN. Empty inputs give an empty ``"none"`` result and ``0`` otherwise.

    Backends: ``"triton"`` runs one kernel per direction on CUDA tensors (and on CPU tensors when
    ``TRITON_INTERPRET=1``); ``"torch"`` runs a few whole-tensor ops up to 2^18 elements and streams
    cache-sized chunks above; ``"auto"`` picks Triton for CUDA tensors when it can be imported and torch
    otherwise. A backend named explicitly that cannot run raises :class:`~fxvae.errors.KLError`.

    >>> mu, log_sigma = torch.zeros(4, 8, requires_grad=True), torch.zeros(4, 8, requires_grad=True)
    >>> kl_divergence(mu, log_sigma)
    tensor(0., grad_fn=<_KLDivergenceBackward>)
    >>> kl_divergence(mu, log_sigma, reduction="none", beta=0.5, free_bits=0.25).shape
    torch.Size([4])
    """
    _check_inputs(mu, log_sigma)
    if reduction not in _REDUCTIONS:
        raise KLError(f"unknown reduction {reduction!r}; use 'none', 'sum', 'mean' or 'batchmean'")
    if not (free_bits >= 0.0 and math.isfinite(free_bits)):
        raise KLError(f"free_bits must be a finite number >= 0 (nats per latent dimension), got {free_bits}")
    chosen = _choose_backend(backend, mu)
    return _KLDivergence.apply(mu, log_sigma, reduction, float(beta), float(free_bits), chosen)


def _check_inputs(mu: torch.Tensor, log_sigma: torch.Tensor) -> None:
    # One test passes the usual call quickly (small losses pay per microsecond); the rest says what is wrong.
    if (
        isinstance(mu, torch.Tensor)
        and isinstance(log_sigma, torch.Tensor)
        and mu.dtype == log_sigma.dtype
        and mu.is_floating_point()
        and mu.shape == log_sigma.shape
        and mu.dim() > 0
        and mu.device == log_sigma.device
    ):
        return
    for name, value in (("mu", mu), ("log_sigma", log_sigma)):
        if not isinstance(value, torch.Tensor):
            raise KLError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise KLError(f"{name} has dtype {value.dtype}; pass a floating-point tensor")
    if mu.shape != log_sigma.shape:
        raise KLError(f"mu has shape {tuple(mu.shape)} but log_sigma has {tuple(log_sigma.shape)}; pass equal shapes")
    if mu.dim() == 0:
        raise KLError("mu and log_sigma are scalars; pass tensors of shape (batch, ...)")
    if mu.dtype != log_sigma.dtype:
        raise KLError(f"mu is {mu.dtype} but log_sigma is {log_sigma.dtype}; cast them to one dtype")
    if mu.device != log_sigma.device:
        raise KLError(f"mu is on {mu.device} but log_sigma is on {log_sigma.device}; move them to one device")


def _choose_backend(backend: str, mu: torch.Tensor) -> Literal["triton", "torch"]:
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if mu.is_cuda and _triton_problem(mu.device) is None else "torch"
    if backend == "triton":
        problem = _triton_problem(mu.device)
        if problem is not None:
            raise KLError(f"backend='triton' cannot run: {problem}; pass backend='torch' or 'auto'")
        return "triton"
    raise KLError(f"unknown backend {backend!r}; use 'auto', 'triton' or 'torch'")


def _triton_problem(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device``, or None when they can."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "the tensors are on cpu and Triton compiles for CUDA only (set TRITON_INTERPRET=1 to test)"
    if device.type not in ("cpu", "cuda"):
        return f"the tensors are on {device.type} and the kernels run on cuda only"
    try:
        _triton_kernels()
    except ImportError as err:
        return f"triton cannot be imported ({err}); pip install 'fxvae[triton]'"
    return None


@cache
def _triton_kernels() -> ModuleType:
    from fxvae.ops import kl_triton

    return kl_triton


class _KLDivergence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        mu: torch.Tensor,
        log_sigma: torch.Tensor,
        reduction: Reduction,
        beta: float,
        free_bits: float,
        backend: Literal["triton", "torch"],
    ) -> torch.Tensor:
        batch = mu.shape[0]
        dims = math.prod(mu.shape[1:])
        mu2, ls2 = _matrix(mu, batch, dims), _matrix(log_sigma, batch, dims)
        acc_dtype = torch.float64 if mu.dtype == torch.float64 else torch.float32
        sums: Sums
        if backend == "triton":
            sums = partial(_triton_kernels().kl_sums, mu2, ls2, acc_dtype=acc_dtype)
        elif mu2.numel() <= _SMALL:
            sums = _whole_sums(mu2, ls2, acc_dtype)
        else:
            sums = partial(_torch_sums, mu2, ls2, acc_dtype=acc_dtype)
        keep = per_dim = None
        if free_bits > 0.0:
            per_dim = sums("cols", None, 0.0)
            # Compared as sums (not means) so that no division can move a dimension across the floor.
            keep = per_dim >= free_bits * batch
        if reduction == "none":
            result = sums("rows", keep, free_bits)
        elif per_dim is None:
            result = sums("all", None, 0.0)
        else:
            result = torch.where(keep, per_dim, free_bits * batch).sum()
        result = result * (beta * _reduction_factor(reduction, batch, dims))
        ctx.save_for_backward(mu, log_sigma, keep)
        ctx.reduction, ctx.beta, ctx.backend = reduction, beta, backend
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mu, log_sigma, keep = ctx.saved_tensors
        batch = mu.shape[0]
        dims = math.prod(mu.shape[1:])
        # One scale per sample for "none", a 0-d tensor otherwise: never a host sync on CUDA.
        scale = grad * (ctx.beta * _reduction_factor(ctx.reduction, batch, dims))
        need_mu, need_ls = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grads = _triton_kernels().kl_grads if ctx.backend == "triton" else _torch_grads
        grad_mu, grad_ls = grads(
            _matrix(mu, batch, dims), _matrix(log_sigma, batch, dims), scale, keep, need_mu, need_ls
        )
        if mu.dim() != 2:
            grad_mu = None if grad_mu is None else grad_mu.view(mu.shape)
            grad_ls = None if grad_ls is None else grad_ls.view(mu.shape)
        return grad_mu, grad_ls, None, None, None, None


def _matrix(t: torch.Tensor, batch: int, dims: int) -> torch.Tensor:
    # Skipping reshape for the usual (B, D) latents saves a few microseconds a call on small inputs.
    return t if t.dim() == 2 else t.reshape(batch, dims)


def _reduction_factor(reduction: str, batch: int, dims: int) -> float:
    # An empty input sums to 0, so max(..., 1) makes its loss 0 rather than 0/0.
    if reduction == "mean":
        return 1.0 / max(batch * dims, 1)
    if reduction == "batchmean":
        return 1.0 / max(batch, 1)
    return 1.0


def _tiles(batch: int, dims: int, chunk: int) -> Iterator[tuple[slice, slice]]:
    """Row and column slices covering a (batch, dims) matrix with tiles of at most ``chunk`` elements."""
    rows = max(1, chunk // max(dims, 1))
    cols = max(1, min(dims, chunk))
    for r in range(0, batch, rows):
        for c in range(0, dims, cols):
            yield slice(r, min(r + rows, batch)), slice(c, min(c + cols, dims))


def _chunk(device: torch.device) -> int:
    if device.type != "cpu":
        return _DEVICE_CHUNK
    # Measured on 2 threads only (docs/benchmarks.md); per thread the three scratch tiles stay in L2.
    return min(max(_CPU_CHUNK, (_CPU_CHUNK // 2) * torch.get_num_threads()), 1 << 22)


def _log2_sigma2(ls: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """2 log2(e) ls in ``dtype``, into ``out`` if given; half is upcast first, a half product would round."""
    if ls.dtype == dtype:
        return torch.mul(ls, _SCALARS[TWO_LOG2_E, dtype], out=out)
    return (ls.to(dtype) if out is None else out.copy_(ls)).mul_(_SCALARS[TWO_LOG2_E, dtype])


def _twice_kl(
    mu: torch.Tensor,
    ls: torch.Tensor,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
    tmp: torch.Tensor | None = None,
) -> torch.Tensor:
    """2 k = mu^2 + sigma^2 - 1 - 2 ls in ``dtype``: in a tile's scratch ``out`` and ``tmp``, or new ones."""
    t = _log2_sigma2(ls, dtype, tmp)
    twice = torch.exp2(t, out=out)
    twice.add_(t.clamp_(max=LOG2_SIGMA2_CAP), alpha=-LN_2).sub_(_SCALARS[1.0, dtype])
    return twice.addcmul_(mu, mu)


def _whole_sums(mu: torch.Tensor, ls: torch.Tensor, acc_dtype: torch.dtype) -> Sums:
    """The sums of an input of at most ``_SMALL`` elements: k is computed once, here, in whole-tensor ops.

    A small loss pays for per-op overhead, not bandwidth, so this path has no tiles and no accumulator,
    and free bits reduce the same ``k`` twice instead of computing it again. Every sum is taken in the
    computing dtype: a float32 sum of float32 values asking for float64 is a slow converting reduction
    (over 10x a plain one at 2^18 elements), and halving ``2 k`` first keeps the sum in range wherever the
    loss is.
    """
    k = _twice_kl(mu, ls, acc_dtype).mul_(_SCALARS[0.5, acc_dtype])

    def sums(axis: Axis, keep: torch.Tensor | None, floor: float) -> torch.Tensor:
        if keep is not None:
            # keep only exists once the per-dimension sums are taken, so filling in place loses nothing.
            k.masked_fill_(~keep, floor)
        if axis == "all":
            return k.sum()
        return k.sum(1 if axis == "rows" else 0)

    return sums


def _torch_sums(
    mu: torch.Tensor,
    ls: torch.Tensor,
    axis: Axis,
    keep: torch.Tensor | None,
    floor: float,
    acc_dtype: torch.dtype,
) -> torch.Tensor:
    """Sums of k over each sample ("rows", shape (B,)), each dimension ("cols", (D,)) or everything.

    Elements of dimensions where ``keep`` is False count as ``floor``. Streams tiles of ``_chunk``
    elements through scratch that stays in cache.
    """
    batch, dims = mu.shape
    chunk = _chunk(mu.device)
    size = min(chunk, mu.numel())
    out = torch.empty(size, dtype=acc_dtype, device=mu.device)
    tmp = torch.empty_like(out)
    drop = None if keep is None else ~keep
    # "all" adds the tiles elementwise into a tile-sized accumulator and reduces once at the end: a
    # reduction per tile costs more than the tile's arithmetic.
    acc_size = (batch,) if axis == "rows" else (dims,) if axis == "cols" else (size,)
    acc = torch.zeros(acc_size, dtype=acc_dtype, device=mu.device)
    for r, c in _tiles(batch, dims, chunk):
        shape = (r.stop - r.start, c.stop - c.start)
        n = shape[0] * shape[1]
        twice = _twice_kl(mu[r, c], ls[r, c], acc_dtype, out[:n].view(shape), tmp[:n].view(shape))
        if drop is not None:
            twice.masked_fill_(drop[c], 2.0 * floor)
        if axis == "rows":
            acc[r].add_(twice.sum(1))
        elif axis == "cols":
            acc[c].add_(twice.sum(0))
        else:
            acc[:n].view(shape).add_(twice)
    if axis == "all":
        return (acc.sum(dtype=torch.float64) * 0.5).to(acc_dtype)
    return acc.mul_(0.5)


def _torch_grads(
    mu: torch.Tensor,
    ls: torch.Tensor,
    scale: torch.Tensor,
    keep: torch.Tensor | None,
    need_mu: bool,
    need_ls: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """scale * mu and scale * (sigma^2 - 1), zero where ``keep`` is False; whole or tile by tile."""
    batch, dims = mu.shape
    drop = None if keep is None else ~keep
    half = ls.dtype != scale.dtype
    per_sample = scale.dim() == 1
    if per_sample or half:
        # A 0-d scale would not promote float16 to float32 and would itself be rounded to float16.
        scale = scale.reshape(-1, 1) if per_sample else scale.reshape(1)
    small = mu.numel() <= _SMALL
    if small and not half:
        return _grads(mu, ls, scale, drop, need_mu, need_ls)
    # Half-precision gradients are computed in float32 and rounded once, on the write into these.
    grad_mu = torch.empty((batch, dims), dtype=mu.dtype, device=mu.device) if need_mu else None
    grad_ls = torch.empty((batch, dims), dtype=ls.dtype, device=ls.device) if need_ls else None
    if small:
        return _grads(mu, ls, scale, drop, need_mu, need_ls, grad_mu, grad_ls)
    chunk = _chunk(mu.device)
    tmp = None
    if half and need_ls:
        tmp = torch.empty(min(chunk, mu.numel()), dtype=scale.dtype, device=mu.device)
    for r, c in _tiles(batch, dims, chunk):
        shape = (r.stop - r.start, c.stop - c.start)
        _grads(
            mu[r, c],
            ls[r, c],
            scale[r] if per_sample else scale,
            None if drop is None else drop[c],
            need_mu,
            need_ls,
            None if grad_mu is None else grad_mu[r, c],
            None if grad_ls is None else grad_ls[r, c],
            None if tmp is None else tmp[: shape[0] * shape[1]].view(shape),
        )
    return grad_mu, grad_ls


def _grads(
    mu: torch.Tensor,
    ls: torch.Tensor,
    scale: torch.Tensor,
    drop: torch.Tensor | None,
    need_mu: bool,
    need_ls: bool,
    grad_mu: torch.Tensor | None = None,
    grad_ls: torch.Tensor | None = None,
    tmp: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """scale * mu and scale * (sigma^2 - 1), 0 where ``drop``, computed in ``scale``'s dtype.

    Written into ``grad_mu``, ``grad_ls`` and the float scratch ``tmp`` where given (a tile, or
    half-precision gradients), into new tensors otherwise.
    """
    if need_mu:
        grad_mu = torch.mul(mu, scale, out=grad_mu)
        if drop is not None:
            grad_mu.masked_fill_(drop, 0.0)
    if need_ls:
        # sigma^2 is computed in the gradient itself when that has the computing dtype.
        t = _log2_sigma2(ls, scale.dtype, grad_ls if ls.dtype == scale.dtype else tmp).exp2_()
        # scale * sigma^2 - scale in one op
        grad_ls = torch.addcmul(-scale, t, scale, out=t if grad_ls is None else grad_ls)
        if drop is not None:
            grad_ls.masked_fill_(drop, 0.0)
    return grad_mu, grad_ls
