"""Everything a failed fxvae call must leave as it was on the user's model, captured and compared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def _bits(tensor: torch.Tensor | None) -> tuple[Any, ...] | None:
    """Shape, dtype, device, strides, ``requires_grad`` and the raw bytes (so NaN equals NaN); meta
    tensors have no bytes."""
    if tensor is None:
        return None
    head = (tuple(tensor.shape), tensor.dtype, tensor.device, tensor.stride(), tensor.requires_grad)
    if tensor.is_meta:
        return head
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).clone()
    return (*head, raw)


def _same(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    if len(a) != len(b) or a[:5] != b[:5]:
        return False
    return len(a) == 5 or torch.equal(a[5], b[5])


@dataclass(frozen=True)
class ModelSnapshot:
    """The model's module tree, tensors (values and object identity), training flags, hooks and
    ``requires_grad``, as they were when :func:`snapshot` ran."""

    modules: tuple[tuple[str, int, str, bool], ...]
    """(path, id, class, training) for every submodule."""
    tensors: tuple[tuple[str, int, tuple[Any, ...] | None, tuple[Any, ...] | None], ...]
    """(path, id, bits, bits of ``.grad``) for every parameter and buffer, tied ones under each name."""
    hooks: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...]
    """(module path, hook kind, (handle id, id of the hook function)) for every module hook."""


def snapshot(model: nn.Module) -> ModelSnapshot:
    """Capture what :func:`assert_unchanged` compares."""
    tree = model.named_modules(remove_duplicate=False)
    modules = tuple((path, id(m), type(m).__qualname__, m.training) for path, m in tree)
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    tensors = tuple((p, id(t), _bits(t), _bits(t.grad)) for p, t in named)
    hooks = tuple(
        (path, kind, tuple((key, id(fn)) for key, fn in getattr(module, kind).items()))
        for path, module in model.named_modules(remove_duplicate=False)
        for kind in _HOOK_DICTS
    )
    return ModelSnapshot(modules, tensors, hooks)


def assert_unchanged(model: nn.Module, before: ModelSnapshot) -> None:
    """Fail naming the first difference between ``model`` now and ``before``."""
    after = snapshot(model)
    assert after.modules == before.modules, "the module tree or a training flag changed"
    assert [t[:2] for t in after.tensors] == [t[:2] for t in before.tensors], (
        "a parameter or buffer was replaced, added or removed"
    )
    for (path, _, value, grad), (_, _, value_then, grad_then) in zip(after.tensors, before.tensors, strict=True):
        assert _same(value, value_then), f"{path} changed (value, dtype, device, layout or requires_grad)"
        assert _same(grad, grad_then), f"{path}.grad changed"
    assert after.hooks == before.hooks, "a hook was added or removed"


def lived_in(model: nn.Module) -> nn.Module:
    """``model`` with what a trained model in a user's session carries: forward, pre-forward and backward
    hooks, a frozen parameter, a stored gradient, and a submodule in another mode than the root."""
    model.register_forward_pre_hook(lambda module, args: None)
    model.register_forward_hook(lambda module, args, out: None)
    params = list(model.parameters())
    if not params:
        return model
    layer = next(m for m in model.modules() if next(m.parameters(recurse=False), None) is not None)
    layer.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    layer.train(not model.training)
    params[0].requires_grad_(False)
    if params[-1].requires_grad and not params[-1].is_meta:
        params[-1].grad = torch.ones_like(params[-1])
    return model
