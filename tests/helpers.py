"""Helpers the test modules share: reading the leaves of a model's output."""

from __future__ import annotations

import dataclasses

import torch

from fxvae.outputs import tensors


def leaves(out: object) -> list[torch.Tensor]:
    """The tensors of an output, depth first (tuple items, dict values, dataclass fields)."""
    return list(tensors(out))


def recon(out: object) -> torch.Tensor:
    """The first tensor of an output: every zoo model returns its reconstruction first."""
    return leaves(out)[0]


def with_none(out: object) -> list[object]:
    """Output leaves in order, keeping the decoder's None where the VAE has a tensor."""
    if isinstance(out, dict):
        return [leaf for v in out.values() for leaf in with_none(v)]
    if isinstance(out, (tuple, list)):
        return [leaf for v in out for leaf in with_none(v)]
    if dataclasses.is_dataclass(out):
        return [leaf for f in dataclasses.fields(out) for leaf in with_none(getattr(out, f.name))]
    return [out]


def state_equal(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    """Whether ``a``'s state dict has exactly ``b``'s keys and bitwise equal tensors."""
    got = a.state_dict()
    return list(got) == list(b) and all(torch.equal(got[k], b[k]) for k in b)
