"""Triton kernels of the KL loss; imported by ``fxvae.ops.kl`` only when the Triton backend runs.

One kernel per direction over (BLOCK_B, BLOCK_D) tiles of the (batch, dims) view. Forward writes one
partial sum per tile row (and per tile column for free bits) and torch reduces those small buffers in
a fixed order: no atomics, so the same input gives the same bits. Backward reads ``mu`` and
``log_sigma`` once and writes both gradients once. Tiles are computed in float32 (float64 for float64
inputs), which also keeps Triton's numpy interpreter (``TRITON_INTERPRET=1``) away from bfloat16
arithmetic.

The kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was
imported; tests/ops/triton_cases.py runs these examples' calls under the interpreter, so the doctests skip.

>>> mu, log_sigma = torch.zeros(4, 8, device="cuda"), torch.zeros(4, 8, device="cuda")  # doctest: +SKIP
>>> kl_sums(mu, log_sigma, "rows", None, 0.0, torch.float32)  # doctest: +SKIP
tensor([0., 0., 0., 0.], device='cuda:0')
"""

from __future__ import annotations

from typing import Literal

import torch
import triton
import triton.language as tl

from fxvae.ops.kl_constants import LN_2, LOG2_SIGMA2_CAP, TWO_LOG2_E

# 4096-element tiles: 16 KiB of float32 per input per program, enough in flight to saturate HBM.
_TILE = 4096
_NUM_WARPS = 8


@triton.jit
def _twice_kl(mu, ls, TWO_LOG2_E: tl.constexpr, LN_2: tl.constexpr, CAP: tl.constexpr):
    t = ls * TWO_LOG2_E
    # The cap keeps log sigma = +inf at +inf instead of inf - inf (see fxvae.ops.kl_constants).
    return mu * mu + tl.exp2(t) - 1.0 - tl.minimum(t, CAP) * LN_2


@triton.jit
def _tile(B, D, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (BLOCK_B, BLOCK_D) tile: its ids, row and column indices, their masks, and the
    indices as int64 (B * D may exceed 2^31 elements) broadcast for 2-d offsets."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < B
    col_ok = cols < D
    mask = row_ok[:, None] & col_ok[None, :]
    return pid_b, pid_d, rows, cols, row_ok, col_ok, mask, rows.to(tl.int64)[:, None], cols.to(tl.int64)[None, :]


@triton.jit
def _kl_forward_kernel(
    mu_ptr,  # [B, D] means, strides (stride_mu_b, stride_mu_d), any float dtype
    ls_ptr,  # [B, D] log sigma, strides (stride_ls_b, stride_ls_d), mu's dtype
    keep_ptr,  # [D] bool: dimension reaches the free-bits floor (read when HAS_KEEP)
    rows_ptr,  # [n_col_tiles, B] partial per-sample sums, accumulation dtype (written when ROWS)
    cols_ptr,  # [n_row_tiles, D] partial per-dimension sums, accumulation dtype (written when COLS)
    B,
    D,
    stride_mu_b,
    stride_mu_d,
    stride_ls_b,
    stride_ls_d,
    floor,  # float: what an element of a dimension below the floor counts as
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
    TWO_LOG2_E: tl.constexpr,
    LN_2: tl.constexpr,
    CAP: tl.constexpr,
):
    pid_b, pid_d, rows, cols, row_ok, col_ok, mask, r, c = _tile(B, D, BLOCK_B, BLOCK_D)
    acc_ty = rows_ptr.dtype.element_ty if ROWS else cols_ptr.dtype.element_ty
    mu = tl.load(mu_ptr + r * stride_mu_b + c * stride_mu_d, mask=mask, other=0.0).to(acc_ty)
    ls = tl.load(ls_ptr + r * stride_ls_b + c * stride_ls_d, mask=mask, other=0.0).to(acc_ty)
    kl = 0.5 * _twice_kl(mu, ls, TWO_LOG2_E, LN_2, CAP)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + cols, mask=col_ok, other=0) != 0
        kl = tl.where(keep[None, :], kl, floor)
    kl = tl.where(mask, kl, 0.0)
    if ROWS:
        tl.store(rows_ptr + pid_d * B + rows, tl.sum(kl, axis=1), mask=row_ok)
    if COLS:
        tl.store(cols_ptr + pid_b * D + cols, tl.sum(kl, axis=0), mask=col_ok)


@triton.jit
def _kl_backward_kernel(
    mu_ptr,  # [B, D] means, strides (stride_mu_b, stride_mu_d)
    ls_ptr,  # [B, D] log sigma, strides (stride_ls_b, stride_ls_d)
    keep_ptr,  # [D] bool: dimension reaches the free-bits floor (read when HAS_KEEP)
    scale_ptr,  # [B] per-sample (stride_scale 1) or [1] shared (stride_scale 0) upstream gradient
    grad_mu_ptr,  # [B, D] contiguous, mu's dtype (written when GRAD_MU)
    grad_ls_ptr,  # [B, D] contiguous, mu's dtype (written when GRAD_LS)
    B,
    D,
    stride_mu_b,
    stride_mu_d,
    stride_ls_b,
    stride_ls_d,
    stride_scale,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    GRAD_MU: tl.constexpr,
    GRAD_LS: tl.constexpr,
    TWO_LOG2_E: tl.constexpr,
):
    _, _, rows, cols, row_ok, col_ok, mask, r, c = _tile(B, D, BLOCK_B, BLOCK_D)
    acc_ty = scale_ptr.dtype.element_ty
    scale = tl.load(scale_ptr + rows * stride_scale, mask=row_ok, other=0.0)[:, None]
    if HAS_KEEP:
        keep = tl.load(keep_ptr + cols, mask=col_ok, other=0) != 0
        # where, not a multiply by 0: the gradient of a dropped dimension is 0 even when sigma^2 = inf.
        scale = tl.where(keep[None, :], scale, 0.0)
    out = r * D + c
    if GRAD_MU:
        mu = tl.load(mu_ptr + r * stride_mu_b + c * stride_mu_d, mask=mask, other=0.0).to(acc_ty)
        g = mu * scale
        if HAS_KEEP:
            g = tl.where(keep[None, :], g, 0.0)
        tl.store(grad_mu_ptr + out, g.to(grad_mu_ptr.dtype.element_ty), mask=mask)
    if GRAD_LS:
        ls = tl.load(ls_ptr + r * stride_ls_b + c * stride_ls_d, mask=mask, other=0.0).to(acc_ty)
        g = scale * (tl.exp2(ls * TWO_LOG2_E) - 1.0)
        if HAS_KEEP:
            g = tl.where(keep[None, :], g, 0.0)
        tl.store(grad_ls_ptr + out, g.to(grad_ls_ptr.dtype.element_ty), mask=mask)


def _inputs(mu: torch.Tensor, ls: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The kernels' first three pointers; without free bits ``keep_ptr`` is never read, any tensor will do."""
    return mu, ls, mu if keep is None else keep


def _strides(mu: torch.Tensor, ls: torch.Tensor) -> tuple[int, int, int, int]:
    return mu.stride(0), mu.stride(1), ls.stride(0), ls.stride(1)


def _blocks(batch: int, dims: int) -> tuple[int, int]:
    block_d = min(triton.next_power_of_2(max(dims, 1)), 1024)
    block_b = min(triton.next_power_of_2(max(batch, 1)), max(1, _TILE // block_d))
    return block_b, block_d


def kl_sums(
    mu: torch.Tensor,
    ls: torch.Tensor,
    axis: Literal["rows", "cols", "all"],
    keep: torch.Tensor | None,
    floor: float,
    acc_dtype: torch.dtype,
) -> torch.Tensor:
    """Sums of the per-element KL over each sample ("rows", (B,)), dimension ("cols", (D,)) or all.

    Elements of dimensions where ``keep`` is False count as ``floor``; same contract as the torch path.

    >>> kl_sums(torch.zeros(4, 8, device="cuda"), torch.zeros(4, 8, device="cuda"), "cols", None, 0.0,
    ...         torch.float32).shape  # doctest: +SKIP
    torch.Size([8])
    """
    batch, dims = mu.shape
    if mu.numel() == 0:
        size = (batch,) if axis == "rows" else (dims,) if axis == "cols" else ()
        return torch.zeros(size, dtype=acc_dtype, device=mu.device)
    block_b, block_d = _blocks(batch, dims)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(dims, block_d))
    want_cols = axis == "cols"
    rows_buf = torch.empty((grid[1], batch) if not want_cols else (1,), dtype=acc_dtype, device=mu.device)
    cols_buf = torch.empty((grid[0], dims) if want_cols else (1,), dtype=acc_dtype, device=mu.device)
    _kl_forward_kernel[grid](
        *_inputs(mu, ls, keep),
        rows_buf,
        cols_buf,
        batch,
        dims,
        *_strides(mu, ls),
        floor,
        BLOCK_B=block_b,
        BLOCK_D=block_d,
        HAS_KEEP=keep is not None,
        ROWS=not want_cols,
        COLS=want_cols,
        TWO_LOG2_E=TWO_LOG2_E,
        LN_2=LN_2,
        CAP=LOG2_SIGMA2_CAP,
        num_warps=_NUM_WARPS,
    )
    if want_cols:
        return cols_buf.sum(0)
    per_sample = rows_buf.sum(0)
    return per_sample if axis == "rows" else per_sample.sum()


def kl_grads(
    mu: torch.Tensor,
    ls: torch.Tensor,
    scale: torch.Tensor,
    keep: torch.Tensor | None,
    need_mu: bool,
    need_ls: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """scale * mu and scale * (sigma^2 - 1), zero where ``keep`` is False; ``scale`` is 0-d or (B,).

    >>> mu, scale = torch.ones(4, 8, device="cuda"), torch.tensor(0.25, device="cuda")  # doctest: +SKIP
    >>> grad_mu, grad_ls = kl_grads(mu, torch.zeros_like(mu), scale, None, True, True)  # doctest: +SKIP
    >>> grad_mu[0, 0].item(), grad_ls[0, 0].item()  # doctest: +SKIP
    (0.25, 0.0)
    """
    batch, dims = mu.shape
    grad_mu = torch.empty((batch, dims), dtype=mu.dtype, device=mu.device) if need_mu else None
    grad_ls = torch.empty((batch, dims), dtype=ls.dtype, device=ls.device) if need_ls else None
    if mu.numel() == 0 or not (need_mu or need_ls):
        return grad_mu, grad_ls
    block_b, block_d = _blocks(batch, dims)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(dims, block_d))
    # A 0-d scale is read through stride 0 by every row.
    stride_scale = 1 if scale.dim() == 1 else 0
    scale = scale.reshape(-1).contiguous()
    _kl_backward_kernel[grid](
        *_inputs(mu, ls, keep),
        scale,
        mu if grad_mu is None else grad_mu,
        ls if grad_ls is None else grad_ls,
        batch,
        dims,
        *_strides(mu, ls),
        stride_scale,
        BLOCK_B=block_b,
        BLOCK_D=block_d,
        HAS_KEEP=keep is not None,
        GRAD_MU=need_mu,
        GRAD_LS=need_ls,
        TWO_LOG2_E=TWO_LOG2_E,
        num_warps=_NUM_WARPS,
    )
    return grad_mu, grad_ls
