"""Counter-based standard normals: each number is a function of (seed, stream, row, draw, element) alone.

A generator's numbers depend on how many were drawn before them, so an evaluation's posterior draws would
change with its batch size and its chunk of draws. Here each number is a hash of its coordinates, so a
sample's draws are the same however the data is batched, and two models evaluated with one seed see the
same noise for the same sample (common random numbers, for paired differences):

```
(seed, stream) -> key;  key, row, draw, pair j --[murmur3 finaliser chain, two lanes]--> (u1, u2)
(u1, u2) --[Box-Muller, float64]--> (r cos t, r sin t): elements j and ceil(elements / 2) + j
```
The 32-bit arithmetic runs in int64 with every product kept below 2^63 (multiplications split into 16-bit
halves), so the uniforms are the same on every device (the normals to float64 rounding) and no unsigned
integer type is needed.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_LANES = (0x243F6A88, 0xB7E15162)
"""Two independent chains (digits of pi and e): a pair of numbers repeats only if both 32-bit hashes collide."""


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

    >>> whole = fxvae.measure.noise.normal(0, 0, torch.arange(6), range(4), (3,))
    >>> part = fxvae.measure.noise.normal(0, 0, torch.arange(2, 5), range(1, 3), (3,))
    >>> whole.shape, torch.equal(whole[1:3, 2:5], part)
    (torch.Size([4, 6, 3]), True)
    """
    device = torch.device(device) if device is not None else rows.device
    elements = math.prod(shape)
    pairs = (elements + 1) // 2

    def word(value: int) -> torch.Tensor:
        return torch.tensor(value & _MASK, dtype=torch.int64, device=device)

    coordinates = (
        rows.to(device=device, dtype=torch.int64).reshape(1, -1, 1),
        torch.arange(draws.start, draws.stop, draws.step, dtype=torch.int64, device=device).reshape(-1, 1, 1),
        torch.arange(pairs, dtype=torch.int64, device=device).reshape(1, 1, -1),
    )
    uniforms = []
    for lane in _LANES:
        h = word(lane)
        for value in (word(seed), word(seed >> 32), word(stream), word(stream >> 32), *coordinates):
            h = _step(h, value)
        # (h + 1/2) / 2^32 lies strictly inside (0, 1): the log below stays finite.
        uniforms.append(h.double().add_(0.5).mul_(2.0**-32))
    radius = uniforms[0].log_().mul_(-2.0).sqrt_()
    angle = uniforms[1].mul_(2 * math.pi)
    # Pair j gives element j (r cos t) and element pairs + j (r sin t): contiguous halves, cheaper to write.
    values = torch.cat((torch.cos(angle).mul_(radius), angle.sin_().mul_(radius)), dim=-1)
    return values[..., :elements].reshape(len(draws), -1, *shape).to(dtype)


# The hash works in place on its int64 tensors: allocating a new tensor per operation made it 5x slower.


def _mul(a: torch.Tensor, constant: int) -> torch.Tensor:
    """a <- (a * constant) mod 2^32 for a < 2^32, as two products below 2^49 (no int64 overflow)."""
    high = (a * (constant >> 16)).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return a.mul_(constant & 0xFFFF).add_(high).bitwise_and_(_MASK)


def _mix(h: torch.Tensor) -> torch.Tensor:
    """h <- murmur3's 32-bit finaliser of h: a bijection whose output bits each depend on every input bit."""
    h.bitwise_xor_(h >> 16)
    _mul(h, 0x85EBCA6B)
    h.bitwise_xor_(h >> 13)
    _mul(h, 0xC2B2AE35)
    return h.bitwise_xor_(h >> 16)


def _step(h: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A new hash with one coordinate folded in (spread by the golden ratio first, so small counters differ
    widely); broadcasts h against value."""
    return _mix(torch.bitwise_xor(h, _mul(value.bitwise_and(_MASK), _GOLDEN)))
