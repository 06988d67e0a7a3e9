"""linear_probe and auroc: labels that the codes determine linearly are learnt, random ones are not, separable
anomalies score 1, and labels that do not match the data raise."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from fxvae.errors import InputError
from fxvae.measure.downstream import auroc, linear_probe

pytest.importorskip("sklearn", reason="the probe needs scikit-learn: pip install 'fxvae[metrics]'")
pytest.importorskip("torchmetrics", reason="the AUROC needs torchmetrics: pip install 'fxvae[metrics]'")


def codes(n: int = 800, dims: int = 6, seed: int = 0) -> torch.Tensor:
    """Codes on very different scales per unit, as an AE's are: the probe standardises them."""
    scales = torch.tensor([0.01, 1.0, 100.0, 0.1, 10.0, 1.0])[:dims]
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed)) * scales


def test_labels_linear_in_the_code_give_accuracy_near_one() -> None:
    z = codes()
    weights = torch.randn(z.shape[1], generator=torch.Generator().manual_seed(1))
    labels = (z / z.std(0) @ weights > 0).long()  # the side of a hyperplane that weighs every unit
    result = linear_probe(z[:600], labels[:600], z[600:], labels[600:])
    assert result.value > 0.97


def test_random_labels_give_accuracy_near_chance() -> None:
    z = codes()
    labels = torch.randint(0, 4, (len(z),), generator=torch.Generator().manual_seed(2))
    result = linear_probe(z[:600], labels[:600], z[600:], labels[600:])
    assert abs(result.value - 0.25) < 3 * math.sqrt(0.25 * 0.75 / 200)


def test_the_probe_standard_error_is_binomial() -> None:
    z = codes()
    labels = (z[:, 1] + z[:, 5] > 0).long()
    result = linear_probe(z[:600], labels[:600], z[600:], labels[600:])
    assert result.stderr == pytest.approx(math.sqrt(result.value * (1 - result.value) / 200))


def test_codes_of_any_shape_are_flattened() -> None:
    z = codes()
    labels = (z[:, 2] > 0).long()
    flat = linear_probe(z[:600], labels[:600], z[600:], labels[600:])
    assert linear_probe(z[:600].reshape(600, 2, 3), labels[:600], z[600:].reshape(200, 2, 3), labels[600:]) == flat


def test_probe_labels_of_the_wrong_length_raise_naming_both_lengths() -> None:
    z = codes()
    labels = (z[:, 0] > 0).long()
    with pytest.raises(InputError, match="test_codes has 200 samples but test_labels has 199"):
        linear_probe(z[:600], labels[:600], z[600:], labels[601:])


def test_a_probe_on_one_class_raises() -> None:
    z = codes()
    with pytest.raises(InputError, match="one class"):
        linear_probe(z[:600], torch.zeros(600, dtype=torch.long), z[600:], torch.zeros(200, dtype=torch.long))


def test_perfectly_separable_anomalies_give_auroc_one() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.cat([torch.rand(90, generator=generator), 2 + torch.rand(10, generator=generator)])
    labels = torch.cat([torch.zeros(90), torch.ones(10)]).long()
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0


def test_scores_unrelated_to_the_labels_give_auroc_near_one_half() -> None:
    generator = torch.Generator().manual_seed(1)
    scores, labels = torch.randn(2000, generator=generator), torch.randint(0, 2, (2000,), generator=generator)
    assert auroc(scores, labels) == pytest.approx(0.5, abs=0.05)


def test_large_scores_are_ranked_not_squashed() -> None:
    # Per-sample NLLs in the hundreds of nats: a sigmoid in float32 would make them all 1.0 (AUROC 0.5).
    scores = torch.tensor([800.0, 801.0, 802.0, 900.0, 901.0])
    assert auroc(scores, torch.tensor([0, 0, 0, 1, 1])) == 1.0


def test_tied_scores_count_half() -> None:
    assert auroc(torch.tensor([1.0, 1.0, 0.0, 2.0]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.875)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        (torch.rand(5), torch.tensor([0, 1, 0, 1]), "scores has 5 values but labels has 4"),
        (torch.rand(4), torch.tensor([0, 1, 2, 1]), r"labels hold \[0, 1, 2\]"),
        (torch.rand(4), torch.tensor([1, 1, 1, 1]), "labels are all 1"),
        (torch.tensor([0.1, math.nan, 0.3, 0.2]), torch.tensor([0, 1, 0, 1]), "NaN or inf"),
    ],
)
def test_bad_auroc_inputs_raise(scores: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        auroc(scores, labels)


def test_importing_the_measures_loads_neither_scikit_learn_nor_torchmetrics() -> None:
    code = "import sys, fxvae.measure.downstream, fxvae.measure.fidelity, fxvae.measure.quality; "
    code += "print(sorted(m for m in ('sklearn', "
    code += "'torchmetrics') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_scikit_learn_the_probe_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    z = codes()
    labels = (z[:, 0] > 0).long()
    with pytest.raises(InputError, match=r"needs scikit-learn: pip install 'fxvae\[metrics\]'"):
        linear_probe(z[:600], labels[:600], z[600:], labels[600:])


def test_without_torchmetrics_the_auroc_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.classification", None)
    with pytest.raises(InputError, match=r"needs torchmetrics: pip install 'fxvae\[metrics\]'"):
        auroc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))
