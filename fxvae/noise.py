"""Counter-based standard normals: each number is a function of (seed, stream, row, draw, element) alone.

A generator's numbers depend on how many were drawn before them, so an evaluation's posterior draws would
change with its batch size and its chunk of draws. Here each number is a hash of its coordinates, so a
sample's draws are the same however the data is batched, and two models evaluated with one seed see the
same noise for the same sample (common random numbers, for paired differences):

```
(seed, stream) -> key;  key, row, draw, element pair --[murmur3 finaliser chain, two lanes]--> (u1, u2)
(u1, u2) --[Box-Muller, float64]--> (r cos t, r sin t): elements 2j and 2j + 1
```
The 32-bit arithmetic runs in int64 with every product kept below 2^63 (multiplications split into 16-bit
halves), so the numbers are the same on every device and need no unsigned integer type.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_LANES = (0x243F6A88, 0xB7E15162)
"""Two independent chains (digits of pi and e): a pair of numbers repeats only if both 32-bit hashes collide."""

_Word = TypeVar("_Word", int, torch.Tensor)


def normal(
    seed: int,
    stream: int,
    rows: torch.Tensor,
    draws: range,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normals of shape ``[len(draws), len(rows), *shape]``, each fixed by its coordinates.

    ``rows`` are the samples' global indices in the data (integers below 2^32), ``draws`` the draws'
    indices, and the elements are numbered in ``shape``'s row-major order; ``seed`` and ``stream`` pick
    independent sets (evaluate uses stream 0 for the posterior draws and 1 for the ``"optimal"`` scale's
    pre-pass). The numbers are computed in float64 (Box-Muller on two 32-bit uniforms) and returned in
    ``dtype`` on ``device`` (default: ``rows``'s device). Any slice of rows or draws gives the same
    numbers as the whole:

    >>> whole = fxvae.noise.normal(0, 0, torch.arange(6), range(4), (3,))
    >>> part = fxvae.noise.normal(0, 0, torch.arange(2, 5), range(1, 3), (3,))
    >>> whole.shape, torch.equal(whole[1:3, 2:5], part)
    (torch.Size([4, 6, 3]), True)
    """
    device = torch.device(device) if device is not None else rows.device
    elements = math.prod(shape)
    pairs = (elements + 1) // 2
    rows = rows.to(device=device, dtype=torch.int64).reshape(1, -1, 1)
    draw_index = torch.arange(draws.start, draws.stop, draws.step, dtype=torch.int64, device=device).reshape(-1, 1, 1)
    pair_index = torch.arange(pairs, dtype=torch.int64, device=device).reshape(1, 1, -1)
    uniforms = []
    for lane in _LANES:
        key = _step(_step(_step(_step(lane, seed & _MASK), (seed >> 32) & _MASK), stream & _MASK), stream >> 32)
        h = _step(_step(_step(key, rows), draw_index), pair_index)
        # (h + 1/2) / 2^32 lies strictly inside (0, 1): the log below stays finite.
        uniforms.append((h.double() + 0.5) * 2.0**-32)
    radius = torch.sqrt(-2.0 * torch.log(uniforms[0]))
    angle = (2 * math.pi) * uniforms[1]
    values = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1).flatten(-2)
    return values[..., :elements].reshape(len(draws), -1, *shape).to(dtype)


def _mul(a: _Word, constant: int) -> _Word:
    """(a * constant) mod 2^32 for a < 2^32, as two products below 2^49 (no int64 overflow)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (a * low + (((a * high) & 0xFFFF) << 16)) & _MASK


def _mix(h: _Word) -> _Word:
    """murmur3's 32-bit finaliser: a bijection whose output bits each depend on every input bit."""
    h = h ^ (h >> 16)
    h = _mul(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _step(h: _Word, value: _Word) -> _Word:
    """Fold one coordinate into the hash (spread by the golden ratio first, so small counters differ widely)."""
    return _mix(h ^ _mul(value & _MASK, _GOLDEN))
