"""Each likelihood's values at the edges: saturated probabilities, the scales' checks and descriptions, the
warnings' thresholds, and what ``get`` and ``fit`` return, each against a value worked out by hand or by torch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import fxvae
from fxvae.measure import likelihoods
from fxvae.measure.likelihoods import Bernoulli, Gaussian, Laplace, LogProb

PROBS = Bernoulli(logits=False)
SATURATED = 2.7e-11
"""A probability seen on a saturated sigmoid decoder of the digits."""


def _torch_bce(p: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's binary cross-entropy per element (logs clamped at -100) and its gradient."""
    p = p.clone().requires_grad_(True)
    loss = F.binary_cross_entropy(p, x, reduction="none")
    loss.sum().backward()
    return loss.detach(), p.grad


@pytest.mark.parametrize(
    ("p", "x"),
    [
        ([SATURATED, SATURATED, SATURATED], [0.0, 1.0, 0.5]),
        ([1 - 1e-7, 1 - 1e-7, 0.9999], [1.0, 0.0, 0.25]),
        ([0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]),
        ([1e-30, 1e-40, 0.3, 0.7], [0.5, 1.0, 0.2, 0.9]),
    ],
    ids=["saturated_at_0", "saturated_at_1", "exactly_0_and_1", "tiny_and_grey"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_probabilities_have_torchs_binary_cross_entropy_values_and_gradients(p, x, dtype) -> None:
    p, x = torch.tensor([p], dtype=dtype), torch.tensor([x], dtype=dtype)
    expected, expected_grad = _torch_bce(p, x)
    recon = p.clone().requires_grad_(True)
    value = PROBS.log_prob(recon, x)
    (-value).sum().backward()
    torch.testing.assert_close(value, -expected.sum(1, keepdim=False))
    torch.testing.assert_close(recon.grad, expected_grad)


def test_a_saturated_probability_costs_its_full_log_on_a_pixel_of_the_other_value() -> None:
    # p = 2.7e-11 where the pixel is 1: -log p = 24.34 nats (a clamp of p at 1e-6 would say 13.8);
    # where the pixel is 0: -log(1 - p) = 2.7e-11; on a grey 0.5: the mean of the two.
    value = PROBS.log_prob(torch.full((1, 3), SATURATED, dtype=torch.float64), torch.tensor([[1.0, 0.0, 0.5]]).double())
    full = -math.log(SATURATED)
    assert -value.item() == pytest.approx(full + SATURATED + 0.5 * (full + SATURATED), rel=1e-12)


def test_a_probability_of_exactly_0_or_1_on_the_wrong_pixel_costs_100_nats_and_is_pushed_back() -> None:
    recon = torch.tensor([[0.0, 1.0]], requires_grad=True)
    value = PROBS.log_prob(recon, torch.tensor([[1.0, 0.0]]))
    assert value.item() == pytest.approx(-200.0)
    value.sum().backward()
    assert recon.grad.tolist() == [[pytest.approx(1e12, rel=1e-6), pytest.approx(-1e12, rel=1e-6)]]


def test_a_nan_probability_gives_a_nan_value_not_an_error() -> None:
    value = PROBS.log_prob(torch.tensor([[0.5, float("nan")]]), torch.tensor([[1.0, 1.0]]))
    assert math.isnan(value.item())


def test_soft_targets_get_the_gradient_of_the_cross_entropy() -> None:
    p = torch.tensor([[0.2, SATURATED]])
    x = torch.tensor([[0.5, 0.5]], requires_grad=True)
    PROBS.log_prob(p, x).sum().backward()
    expected = torch.log(p) - torch.log1p(-p)  # d/dx of x log p + (1 - x) log(1 - p)
    torch.testing.assert_close(x.grad, expected)


def test_the_bernoulli_probabilities_training_loss_is_the_batch_mean() -> None:
    p, x = torch.tensor([[0.2, 0.9], [SATURATED, 0.5]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    per_sample = [-math.log(0.8) - math.log(0.9), -math.log(SATURATED) - math.log(0.5)]
    assert PROBS.nll(p, x).item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_the_probabilities_fisher_weight_is_one_over_p_times_1_minus_p_clamped_a_millionth_from_the_ends() -> None:
    weight = PROBS.fisher(torch.tensor([0.5, 0.2, 0.0, 1.0], dtype=torch.float64))
    eps = 1e-6
    assert weight.tolist() == pytest.approx([4.0, 1 / 0.16, 1 / (eps * (1 - eps)), 1 / (eps * (1 - eps))])


def test_the_logits_fisher_weight_is_p_times_1_minus_p() -> None:
    assert Bernoulli().fisher(torch.tensor([0.0, math.log(3)])).tolist() == pytest.approx([0.25, 0.75 * 0.25])


def test_the_mean_of_logits_is_their_sigmoid_and_of_probabilities_themselves() -> None:
    recon = torch.tensor([0.0, 2.0])
    assert Bernoulli().mean(recon).tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2))])
    assert PROBS.mean(recon) is recon
    assert Gaussian(1.0).mean(recon) is recon


def test_the_logits_training_loss_is_binary_cross_entropy_with_logits_over_the_batch() -> None:
    logits, x = torch.tensor([[0.0, 2.0], [-1.0, 3.0]]), torch.tensor([[1, 0], [0, 1]])
    per_element = [math.log(2), math.log(1 + math.exp(2)), math.log(1 + math.exp(-1)), math.log(1 + math.exp(-3))]
    assert Bernoulli().nll(logits, x).item() == pytest.approx(sum(per_element) / 2, rel=1e-6)
    assert Bernoulli().log_prob(logits, x).tolist() == pytest.approx([-sum(per_element[:2]), -sum(per_element[2:])])


@pytest.mark.parametrize(("low", "high"), [(-0.5, 1.0), (0.0, 1.5)])
def test_bernoulli_targets_outside_the_unit_interval_are_named_with_their_span(low: float, high: float) -> None:
    x = torch.tensor([[low, high]])
    with pytest.raises(fxvae.InputError, match=rf"spans \[{low:.4g}, {high:.4g}\]: scale the data to \[0, 1\]"):
        Bernoulli().check(torch.zeros(1, 2), x)


def test_targets_at_0_and_1_are_inside_the_unit_interval() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Bernoulli().check(torch.full((1, 2), 5.0), torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize(("low", "high"), [(-0.1, 0.5), (0.5, 1.1)])
def test_probabilities_outside_the_unit_interval_are_named_with_their_span(low: float, high: float) -> None:
    with pytest.raises(fxvae.InputError, match=rf"spans \[{low:.4g}, {high:.4g}\]: pass likelihood='bernoulli'"):
        PROBS.check_output(torch.tensor([low, high]))


def test_probabilities_at_0_and_1_and_an_empty_output_are_accepted() -> None:
    PROBS.check_output(torch.tensor([0.0, 1.0]))
    PROBS.check_output(torch.empty(0))


@pytest.mark.parametrize(
    ("values", "warns"),
    [
        (torch.linspace(0, 1, 16), True),
        (torch.linspace(0, 1, 15), False),
        (torch.linspace(0, 1.01, 16), False),
        (torch.linspace(-0.01, 1, 16), False),
    ],
    ids=["16_inside", "15_too_few", "above_1", "below_0"],
)
def test_logits_warn_of_probabilities_from_16_values_all_inside_the_unit_interval(values, warns: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Bernoulli().check_output(values)
    assert [str(w.message).startswith("likelihood='bernoulli' reads") for w in caught] == ([True] if warns else [])


def test_probabilities_inside_the_unit_interval_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PROBS.check_output(torch.linspace(0, 1, 32))


def test_a_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(fxvae.InputError, match=r"reconstruction \[2, 3\] with the data \[2, 4\], which differ"):
        Gaussian(1.0).check(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ("best", r"sigma='best' must be a positive number, a tensor or 'optimal'"),
        (0.0, r"sigma=0.0 must be a positive number"),
        (-2, r"sigma=-2 must be a positive number"),
        (math.inf, r"sigma=inf must be a positive number"),
        (math.nan, r"sigma=nan must be a positive number"),
        (torch.tensor([1, 2]), "sigma must be a tensor of positive finite values"),
        (torch.tensor([1.0, 0.0]), "sigma must be a tensor of positive finite values"),
        (torch.tensor([1.0, math.inf]), "sigma must be a tensor of positive finite values"),
    ],
)
def test_a_scale_must_be_positive_and_finite_or_optimal(scale: object, message: str) -> None:
    with pytest.raises(fxvae.InputError, match=message):
        Gaussian(scale)


def test_a_laplace_scale_is_named_b() -> None:
    with pytest.raises(fxvae.InputError, match=r"^b=0 must be a positive number"):
        Laplace(0)


def test_a_positive_integer_or_tensor_scale_is_accepted() -> None:
    assert Gaussian(2).scale == 2 and not Gaussian(2).needs_fit
    assert Gaussian(torch.tensor([0.5, 1.0])).log_prob(torch.zeros(1, 2), torch.zeros(1, 2)).shape == (1,)


def test_only_an_optimal_scale_needs_a_fit_and_other_likelihoods_never_do() -> None:
    assert Gaussian().needs_fit and Laplace().needs_fit
    assert not Gaussian(1.0).needs_fit and not Bernoulli().needs_fit
    assert not LogProb(lambda r, x: -(r - x).sum(1)).needs_fit


@pytest.mark.parametrize(
    ("lik", "text", "value"),
    [
        (Gaussian(), "gaussian(sigma=optimal)", None),
        (Gaussian(0.12345), "gaussian(sigma=0.1235)", 0.12345),
        (Gaussian(2), "gaussian(sigma=2)", 2.0),
        (Gaussian(torch.ones(3)), "gaussian(sigma=per-dimension)", None),
        (Gaussian(0.5, fitted=True), "gaussian(sigma=0.5, optimal)", 0.5),
        (Laplace(0.25), "laplace(b=0.25)", 0.25),
        (Bernoulli(), "bernoulli", None),
        (PROBS, "bernoulli-probs", None),
    ],
)
def test_a_likelihood_describes_itself_with_its_scale(lik, text: str, value: float | None) -> None:
    assert lik.describe() == text
    assert getattr(lik, "scale_value", None) == value


def test_a_user_log_prob_is_named_after_its_function_or_its_type() -> None:
    def pixels(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -(recon - x).abs().sum(1)

    class Scorer:
        def __call__(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return -(recon - x).abs().sum(1)

    assert (LogProb(pixels).name, LogProb(pixels).describe()) == ("pixels", "custom(pixels)")
    assert LogProb(Scorer()).name == "Scorer"


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda recon, x: recon.sum(), r"returned \[\] for a batch of 2"),
        (lambda recon, x: recon, r"returned \[2, 3\] for a batch of 2"),
        (lambda recon, x: 1.0, r"returned float for a batch of 2"),
        (lambda recon, x: torch.tensor([0.0, math.nan]), "returned NaN or inf"),
        (lambda recon, x: torch.tensor([0.0, -math.inf]), "returned NaN or inf"),
    ],
)
def test_a_user_log_prob_must_return_one_finite_value_per_sample(fn, message: str) -> None:
    with pytest.raises(fxvae.InputError, match=message):
        LogProb(fn).check(torch.zeros(2, 3), torch.zeros(2, 3))


def test_a_user_log_prob_of_one_finite_value_per_sample_passes_its_check() -> None:
    LogProb(lambda recon, x: -(recon - x).pow(2).sum(1)).check(torch.zeros(2, 3), torch.ones(2, 3))


def test_a_user_log_prob_has_no_fisher_weight() -> None:
    with pytest.raises(fxvae.InputError, match="the custom likelihood has no Fisher weight"):
        likelihoods.Likelihood().fisher(torch.zeros(2))


def test_an_unfitted_scale_has_no_fisher_weight_yet() -> None:
    with pytest.raises(fxvae.InputError, match="the gaussian scale is not fitted yet"):
        Gaussian().fisher(torch.zeros(2))


def test_a_laplace_fisher_weight_is_one_over_b_squared() -> None:
    assert Laplace(0.5).fisher(torch.zeros(3)).tolist() == [4.0, 4.0, 4.0]


def test_a_per_dimension_sigma_that_does_not_broadcast_is_named() -> None:
    with pytest.raises(fxvae.InputError, match=r"sigma of shape \[4\] does not broadcast against one sample \[3\]"):
        Gaussian(torch.ones(4)).check(torch.zeros(2, 3), torch.zeros(2, 3))
    Gaussian(torch.ones(3)).check(torch.zeros(2, 3), torch.zeros(2, 3))


def test_gaussian_and_laplace_values_by_hand() -> None:
    recon, x = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    gaussian = -0.5 * (1 / 0.5) ** 2 - 2 * math.log(0.5) - math.log(2 * math.pi)
    assert Gaussian(0.5).log_prob(recon, x).item() == pytest.approx(gaussian)
    assert Gaussian(0.5).nll(recon, x).item() == pytest.approx(-gaussian)
    assert Laplace(0.5).log_prob(recon, x).item() == pytest.approx(-1 / 0.5 - 2 * math.log(2 * 0.5))


def test_training_with_an_optimal_scale_uses_the_batchs_error_with_a_floor() -> None:
    recon, x = torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    sigma = math.sqrt(0.5)  # squared errors 1, 0, 0, 1
    by_hand = -(0.5 * 1 / sigma**2 + 2 * math.log(sigma) + math.log(2 * math.pi))
    assert Gaussian().log_prob(recon, x).tolist() == pytest.approx([by_hand, by_hand])
    assert Gaussian().nll(recon, x).item() == pytest.approx(-by_hand)
    assert Laplace().log_prob(recon, x).tolist() == pytest.approx([-1 / 0.5 - 2 * math.log(1.0)] * 2)
    exact = torch.ones(1, 2)
    assert Gaussian().log_prob(exact, exact).item() == pytest.approx(
        -2 * (math.log(1e-12) + 0.5 * math.log(2 * math.pi))
    )


def test_a_fitted_scale_has_a_floor_of_1e_12() -> None:
    fitted = Gaussian().with_scale(0.0)
    assert (fitted.scale, fitted.fitted, type(fitted)) == (1e-12, True, Gaussian)
    assert Laplace().with_scale(0.3).scale == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("name", "sigma", "expected"),
    [
        ("gaussian", None, "gaussian(sigma=optimal)"),
        ("gaussian", 0.5, "gaussian(sigma=0.5)"),
        ("laplace", None, "laplace(b=optimal)"),
        ("laplace", 2.0, "laplace(b=2)"),
        ("bernoulli", None, "bernoulli"),
        ("bernoulli-probs", None, "bernoulli-probs"),
    ],
)
def test_get_makes_each_named_likelihood_with_its_scale(name: str, sigma: float | None, expected: str) -> None:
    assert likelihoods.get(name, sigma=sigma).describe() == expected


def test_get_returns_a_likelihood_object_itself() -> None:
    lik = Gaussian(1.0)
    assert likelihoods.get(lik) is lik


def test_get_names_every_known_likelihood_when_the_name_is_unknown() -> None:
    message = r"likelihood='poisson' is not one of 'gaussian', 'bernoulli', 'bernoulli-probs', 'laplace', a Likelihood"
    with pytest.raises(fxvae.InputError, match=message):
        likelihoods.get("poisson")


def test_a_scale_given_with_a_likelihood_that_has_none_is_refused_by_name() -> None:
    with pytest.raises(fxvae.InputError, match=r"likelihood='bernoulli-probs' has none"):
        likelihoods.get("bernoulli-probs", sigma=1.0)


def test_fit_leaves_a_fixed_scale_and_a_scale_free_likelihood_as_they_are() -> None:
    for lik in (Gaussian(1.0), Bernoulli()):
        assert likelihoods.fit(lik, [(torch.zeros(1, 2), torch.ones(1, 2))]) is lik


def test_fit_streams_the_mean_error_over_every_batch() -> None:
    x, error = torch.tensor([[0.0, 2.0], [4.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]])
    pairs = [(x[:1] - error[:1], x[:1]), (x[1:] - error[1:], x[1:])]
    assert likelihoods.fit(Laplace(), pairs).scale == pytest.approx(5 / 6)
    assert likelihoods.fit(Gaussian(), pairs).scale == pytest.approx(math.sqrt(7 / 6))


def test_fit_refuses_no_data_and_checks_each_pair() -> None:
    with pytest.raises(fxvae.InputError, match="there is no data to fit the likelihood's scale to"):
        likelihoods.fit(Gaussian(), [])
    with pytest.raises(fxvae.InputError, match="which differ"):
        likelihoods.fit(Gaussian(), [(torch.zeros(1, 2), torch.zeros(1, 3))])


def test_fit_warns_when_a_gaussian_mean_is_further_from_the_data_than_its_spread() -> None:
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # variance 0.25
    with pytest.warns(UserWarning, match="further from the data than the data's own spread"):
        likelihoods.fit(Gaussian(), [(x + 0.6, x)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        likelihoods.fit(Gaussian(), [(x + 0.4, x)])
        likelihoods.fit(Laplace(), [(x + 0.6, x)])


@pytest.mark.parametrize(
    "lik", [Gaussian(0.1), Gaussian(), Laplace(0.1), Gaussian(torch.full((2,), 0.1, dtype=torch.float64))]
)
def test_a_scale_is_read_in_the_reconstructions_dtype(lik) -> None:
    recon, x = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[0.0, 0.1]], dtype=torch.float64)
    assert lik.log_prob(recon.float(), x.float()).dtype == torch.float32
    exact = lik.log_prob(recon, x)
    assert exact.dtype == torch.float64
    sigma = math.sqrt(((0.3 - 0.0) ** 2 + (-0.2 - 0.1) ** 2) / 2) if lik.needs_fit else 0.1
    if isinstance(lik, Laplace):
        expected = -(0.3 + 0.3) / 0.1 - 2 * math.log(2 * 0.1)
    else:
        expected = -0.5 * (0.3**2 + 0.3**2) / sigma**2 - 2 * math.log(sigma) - math.log(2 * math.pi)
    assert exact.item() == pytest.approx(expected, rel=1e-12)
    assert lik.nll(recon, x).item() == pytest.approx(-expected, rel=1e-12)


@pytest.mark.parametrize("lik", [Gaussian(0.5), Gaussian(), PROBS], ids=["gaussian", "optimal", "probs"])
def test_the_training_loss_reads_targets_of_another_dtype_in_the_reconstructions(lik) -> None:
    recon, x = torch.tensor([[0.25, 0.75]]), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert lik.nll(recon, x).dtype == torch.float32
    assert lik.nll(recon, x).item() == pytest.approx(lik.nll(recon, x.float()).item())


def test_a_value_that_is_neither_a_name_nor_callable_is_refused() -> None:
    with pytest.raises(fxvae.InputError, match=r"^likelihood=3\.0 is not one of"):
        likelihoods.get(3.0)


def test_a_scale_given_with_a_likelihood_object_is_refused() -> None:
    message = r"^sigma= goes with a likelihood name; a likelihood object carries its own scale$"
    with pytest.raises(fxvae.InputError, match=message):
        likelihoods.get(Gaussian(1.0), sigma=0.5)


def test_the_warnings_say_what_to_pass_in_full() -> None:
    with pytest.warns(UserWarning) as caught:
        Bernoulli().check_output(torch.linspace(0, 1, 16))
        likelihoods.fit(Gaussian(), [(torch.tensor([[5.0, 5.0]]), torch.tensor([[0.0, 1.0]]))])
    assert [str(w.message) for w in caught] == [
        "likelihood='bernoulli' reads the reconstruction as logits, but every value lies in [0, 1]: if the "
        "decoder ends in a sigmoid (probabilities), pass likelihood='bernoulli-probs'",
        "the reconstruction is further from the data than the data's own spread, so it is not a Gaussian mean "
        "of it; if the decoder returns logits, pass likelihood='bernoulli'",
    ]
    with pytest.raises(fxvae.InputError, match=r"^there is no data to fit the likelihood's scale to$"):
        likelihoods.fit(Gaussian(), [])


@pytest.mark.parametrize(("offset", "warns"), [(1.1, True), (1.0, False), (0.9, False)])
def test_the_spread_that_a_gaussian_fit_warns_past_is_that_of_all_the_batches(offset: float, warns: bool) -> None:
    # Batches [1, 1] and [3, 3]: each alone has no spread, together a variance of 1.
    pairs = [(x + offset, x) for x in (torch.ones(1, 2, dtype=torch.float64), torch.full((1, 2), 3.0).double())]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        likelihoods.fit(Gaussian(), pairs)
    assert len(caught) == warns
