"""The labels a comparison's downstream measures read: class labels for the linear probe, 0/1 anomaly labels for
the AUROC. Each is checked against the data before any training, and split with the samples it belongs to."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from fxvae.errors import InputError
from fxvae.study.samples import Samples


@dataclasses.dataclass(frozen=True)
class Labels:
    """One integer label per training and per held-out sample, in the samples' order."""

    train: torch.Tensor
    test: torch.Tensor


def label_values(value: Any, name: str, train: int, test: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training labels, held-out labels or None) from what the user passed: one integer per sample of the
    training data, or with held-out data a pair (train_labels, test_labels). Lengths are checked here."""
    pair = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_array(v) for v in value)
    if test is not None and not pair:
        raise InputError(
            f"{name} is one array, but the held-out data is given separately: pass {name}=(train_labels, "
            f"test_labels), one label per sample of each (on the command line, --test-{name.replace('_', '-')})"
        )
    if test is None and pair:
        raise InputError(
            f"{name} is a pair (train_labels, test_labels), but no held-out data is given: pass test=, or one label "
            "per sample of train"
        )
    parts = value if pair else (value,)
    found = [_label_tensor(v, name) for v in parts]
    for labels, samples, what in zip(found, (train, test), ("training data", "held-out data"), strict=False):
        if len(labels) != samples:
            raise InputError(
                f"{name} holds {len(labels)} labels, but the {what} holds {samples} samples: pass one integer "
                "label per sample, in the data's order"
            )
    if name == "anomaly_labels" and any(((t != 0) & (t != 1)).any() for t in found):
        raise InputError(f"{name} must be 0 (normal) or 1 (anomaly) for each sample")
    return found[0], found[1] if pair else None


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, list, tuple)) or hasattr(value, "__array__")


def _label_tensor(value: Any, name: str) -> torch.Tensor:
    try:
        labels = torch.as_tensor(value if isinstance(value, (torch.Tensor, list, tuple)) else np.array(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{name} must be one integer per sample (a tensor, an array or a list): {err}") from err
    labels = labels.squeeze(-1) if labels.dim() == 2 and labels.shape[1] == 1 else labels
    if labels.dim() != 1 or labels.is_complex():
        raise InputError(f"{name} must be one integer per sample, a 1-d array; got shape {list(labels.shape)}")
    if labels.is_floating_point() and not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
        raise InputError(f"{name} must be whole numbers (class indices), one per sample")
    return labels.long().cpu()


def indexed(samples: Samples) -> Samples:
    """``samples`` carrying each sample's index, so that a split says which samples went where (a Dataset's
    subsets keep their indices already)."""
    if samples.tensors is None:
        return samples
    index = torch.arange(len(samples))
    return Samples(None, samples.count, _tensors=(*samples.tensors, index))


def index_of(samples: Samples) -> torch.Tensor:
    """The indices, in the data as given, of a split's samples (:func:`indexed`)."""
    if samples.tensors is not None:
        return samples.tensors[-1]
    return torch.as_tensor(samples.dataset.indices)
