"""Constants of the KL loss shared by the torch path (``fxvae.ops.kl``) and the Triton kernels.

Both backends compute ``2 k = mu^2 + sigma^2 - 2 log sigma - 1`` as
``mu^2 + exp2(t) - LN_2 * min(t, LOG2_SIGMA2_CAP) - 1`` with ``t = TWO_LOG2_E * log_sigma = log2(sigma^2)``.
The values live here so that the two backends cannot drift apart, and so that the kernels never import
the torch path (nor it them).
"""

from __future__ import annotations

import math

TWO_LOG2_E = 2.0 / math.log(2.0)
"""``2 log2(e)``, so that ``sigma^2 = exp2(TWO_LOG2_E * log_sigma)``: ATen's exp2 is ~3x faster than exp
or expm1 on CPU (benchmarks/kl_cpu_variants.py, docs/kl.md)."""

LN_2 = math.log(2.0)
"""``ln 2``, which turns ``t = log2(sigma^2)`` back into the linear term ``2 log sigma = LN_2 * t``."""

LOG2_SIGMA2_CAP = 128.0
"""Cap on ``t`` in the linear term only. ``log_sigma = +inf`` would make ``sigma^2 - 2 log sigma`` inf - inf.
Above ``t = 128`` sigma^2 overflows float32 and dwarfs the linear term in float64, so capping the linear
term alone keeps every finite result exact (and the rest +inf), never NaN."""
