"""The value tests of test_kl.py, rerun on the Triton kernels; needs TRITON_INTERPRET=1 on CPU.

test_kl_triton.py runs this file in a subprocess, because the variable must be set before triton is
imported: ``TRITON_INTERPRET=1 python -m pytest tests/ops/triton_cases.py``.
"""

from __future__ import annotations

import os

import pytest
import torch

from fxvae.ops.kl import kl_divergence
from tests.ops.kl_oracle import REDUCTIONS, free_bits_between, latents
from tests.ops.test_kl import (  # noqa: F401  (collected here with backend="triton")
    test_beta_and_free_bits_match_the_oracle,
    test_beta_scales_loss_and_gradients,
    test_empty_inputs_give_zero_or_empty_and_empty_gradients,
    test_free_bits_batchmean_is_the_iaf_objective,
    test_free_bits_combine_the_same_way_in_every_reduction,
    test_free_bits_gradient_flows_at_a_tie_like_clamp,
    test_free_bits_zero_the_gradient_of_dimensions_below_the_floor,
    test_half_inputs_give_a_float32_loss_and_gradients_in_their_dtype,
    test_huge_log_sigma_gives_inf_not_nan,
    test_loss_and_gradients_match_torch_distributions,
    test_non_contiguous_inputs_give_the_contiguous_values,
    test_odd_shapes_match_the_oracle,
    test_only_the_inputs_are_saved_for_backward,
    test_only_the_requested_gradients_are_computed,
    test_same_input_gives_the_same_bits_twice,
    test_very_negative_log_sigma_stays_finite_and_minus_inf_gives_inf,
)

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
        reason="the Triton kernels need a CUDA device or TRITON_INTERPRET=1",
    ),
    # The interpreter's numpy exp2 warns where sigma^2 overflows to inf, which the tests ask for.
    pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning"),
]


@pytest.fixture
def backend() -> str:
    return "triton"


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triton_gradients_pass_gradcheck_in_float64(reduction: str) -> None:
    mu, log_sigma = latents((4, 3, 2))
    floor = free_bits_between(mu, log_sigma)
    for beta, free_bits in ((1.0, 0.0), (0.7, floor)):
        assert torch.autograd.gradcheck(
            lambda m, s, b=beta, f=free_bits: kl_divergence(
                m, s, reduction=reduction, beta=b, free_bits=f, backend="triton"
            ),
            (mu, log_sigma),
        )


def test_triton_and_torch_backends_agree_on_a_multi_tile_input() -> None:
    mu, log_sigma = latents((37, 1500), torch.float32)
    for reduction in REDUCTIONS:
        by = [kl_divergence(mu, log_sigma, reduction=reduction, backend=b) for b in ("triton", "torch")]
        torch.testing.assert_close(by[0], by[1], rtol=1e-5, atol=1e-5)
