"""What a model's codes and scores are good for, when the user has labels: a linear probe's accuracy on the codes
(scikit-learn) and an anomaly score's AUROC (torchmetrics); both in the ``metrics`` extra,
``pip install 'fxvae[metrics]'``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fxvae.errors import InputError
from fxvae.measure.evaluation import Estimate

PROBE_MAX_ITER = 5000
"""L-BFGS iterations of the probe's logistic regression: standardised codes converge in far fewer."""


def linear_probe(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any) -> Estimate:
    """The accuracy on ``test_codes`` of a logistic regression fitted to ``train_codes`` (each code flattened and
    standardised with the training codes' mean and deviation; scikit-learn's defaults otherwise, L2 with C = 1),
    with its binomial standard error sqrt(p (1 - p) / n_test).

    >>> from fxvae.measure.downstream import linear_probe
    >>> codes = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> labels = (codes[:, 0] > 0).long()
    >>> linear_probe(codes[:100], labels[:100], codes[100:], labels[100:]).value > 0.9
    True
    """
    train_x, train_y = _pair(train_codes, train_labels, "train")
    test_x, test_y = _pair(test_codes, test_labels, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise InputError(
            f"train_codes have {train_x.shape[1]} values per sample but test_codes {test_x.shape[1]}: pass the "
            "codes of one model"
        )
    classes = torch.unique(train_y)
    if len(classes) < 2:
        raise InputError(f"train_labels hold one class ({classes.tolist()}): a probe needs at least two")
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as err:
        raise InputError("the linear probe needs scikit-learn: pip install 'fxvae[metrics]'") from err
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER))
    probe.fit(train_x.numpy(), train_y.numpy())
    accuracy = float((probe.predict(test_x.numpy()) == test_y.numpy()).mean())
    return Estimate(accuracy, math.sqrt(accuracy * (1 - accuracy) / len(test_y)))


def auroc(scores: Any, labels: Any) -> float:
    """The area under the ROC curve of ``scores`` as a detector of ``labels`` (1 = anomaly, 0 = normal; a
    higher score means more anomalous): 1 when every anomaly scores above every normal sample, 0.5 for a score
    unrelated to the labels, ties counted half.

    The scores are replaced by their ranks scaled into [0, 1] before torchmetrics sees them: it reads scores
    outside [0, 1] as logits and applies a sigmoid, which in float32 rounds large scores (a NLL of 800 nats and
    one of 900) to the same 1.0.

    >>> from fxvae.measure.downstream import auroc
    >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
    """
    values, targets = _vector(scores, "scores"), _vector(labels, "labels")
    if len(values) != len(targets):
        raise InputError(f"scores has {len(values)} values but labels has {len(targets)}: pass one label per score")
    if not torch.isfinite(values.double()).all():
        raise InputError("scores hold NaN or inf: pass finite anomaly scores")
    if not ((targets == 0) | (targets == 1)).all():
        raise InputError(f"labels hold {torch.unique(targets).tolist()}: pass 0 (normal) or 1 (anomaly) per sample")
    if targets.min() == targets.max():
        raise InputError(f"labels are all {int(targets[0])}: the AUROC needs both normal (0) and anomalous (1) samples")
    try:
        from torchmetrics.functional.classification import binary_auroc
    except ImportError as err:
        raise InputError("the AUROC needs torchmetrics: pip install 'fxvae[metrics]'") from err
    levels, ranks = torch.unique(values.double(), return_inverse=True)
    ranks = ranks.double() / max(len(levels) - 1, 1)
    return binary_auroc(ranks, targets.long()).item()


def _vector(data: Any, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(data).detach().cpu()
    if tensor.dim() != 1:
        raise InputError(f"{what} has shape {list(tensor.shape)}: pass one value per sample, shape [N]")
    return tensor


def _pair(codes: Any, labels: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(codes).detach().cpu().double()
    y = _vector(labels, f"{split}_labels")
    if x.dim() == 0 or len(x) != len(y):
        rows = len(x) if x.dim() else 0
        raise InputError(f"{split}_codes has {rows} samples but {split}_labels has {len(y)}: pass one label per code")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise InputError(f"{split}_labels hold fractions ({y.dtype}): pass integer class labels")
        y = y.long()
    if not torch.isfinite(x).all():
        raise InputError(f"{split}_codes hold NaN or inf")
    return x.reshape(len(x), -1), y
