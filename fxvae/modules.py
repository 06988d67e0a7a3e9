"""Helpers over ``nn.Module`` trees that every stage shares: dotted paths, modes, copies, argument names."""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fxvae.errors import InputError


def resolve(root: nn.Module, target: str) -> Any:
    """The object at the dotted path ``target`` below ``root``: a submodule, parameter, buffer or attribute.

    >>> resolve(nn.Sequential(nn.Linear(2, 3)), "0.weight").shape
    torch.Size([3, 2])
    """
    value: Any = root
    for part in target.split(".") if target else ():
        value = getattr(value, part)
    return value


def place(root: nn.Module, target: str, value: Any, *, buffer: bool = False) -> None:
    """Register ``value`` at the dotted path ``target``, creating empty container modules on the way.

    Parameters and modules register as such; a tensor registers as a buffer when ``buffer`` is set.

    >>> holder = nn.Module()
    >>> place(holder, "inner.weight", nn.Parameter(torch.zeros(2)))
    >>> [name for name, _ in holder.named_parameters()]
    ['inner.weight']
    """
    owner_path, _, name = target.rpartition(".")
    owner = root
    for part in owner_path.split(".") if owner_path else ():
        if not isinstance(getattr(owner, part, None), nn.Module):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if buffer and isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
        owner.register_buffer(name, value)
    else:
        setattr(owner, name, value)


def remove(root: nn.Module, target: str) -> None:
    """Delete the attribute at the dotted path ``target`` (a parameter, buffer, module or plain value)."""
    owner_path, _, name = target.rpartition(".")
    delattr(resolve(root, owner_path), name)


def is_buffer(root: nn.Module, target: str) -> bool:
    owner_path, _, name = target.rpartition(".")
    owner = resolve(root, owner_path)
    return isinstance(owner, nn.Module) and name in owner._buffers


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards.

    >>> ae = nn.Sequential(nn.Dropout()).train()
    >>> with eval_mode(ae):
    ...     ae.training
    False
    >>> ae.training
    True
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def input_names(module: nn.Module, count: int) -> list[str]:
    """The names of the first ``count`` positional arguments of ``module``'s forward (``input_<i>`` past them).

    A GraphModule's names are its placeholders' targets (the argument names; fx renames the nodes).

    >>> input_names(nn.Linear(2, 2), 2)
    ['input', 'input_1']
    """
    if isinstance(module, torch.fx.GraphModule):
        names = [str(n.target) for n in module.graph.find_nodes(op="placeholder")]
    else:
        names = []
        for param in inspect.signature(module.forward).parameters.values():
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                break
            names.append(param.name)
    return [names[i] if i < len(names) else f"input_{i}" for i in range(count)]


def input_count(module: nn.Module) -> int:
    """How many positional inputs a batch gives ``module``: a GraphModule's placeholders, else the forward's
    positional parameters without a default (at least 1).

    >>> input_count(nn.Linear(2, 2)), input_count(nn.Bilinear(2, 2, 2))
    (1, 2)
    """
    if isinstance(module, torch.fx.GraphModule):
        return len(module.graph.find_nodes(op="placeholder"))
    parameters = list(inspect.signature(module.forward).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return max(1, sum(1 for p in positional if p.default is p.empty))


def owned_copy(model: nn.Module, *, share_tensors: bool = False) -> nn.Module:
    """A deep copy that owns its parameters and buffers (tied ones stay tied to each other), or, with
    ``share_tensors``, one that shares them and owns only its modules (its own train/eval flags).

    Tensors a forward pre-hook computes and stores as plain attributes (old-style ``weight_norm``'s
    ``weight``, after a training step or before the first forward) are not graph leaves, which
    ``copy.deepcopy`` refuses; the hook recomputes them on every call, so the copy gets a detached clone.
    Gradients are not copied.

    >>> ae = nn.Sequential(nn.Linear(4, 2))
    >>> owned_copy(ae)[0].weight is ae[0].weight, owned_copy(ae, share_tensors=True)[0].weight is ae[0].weight
    (False, True)
    """
    memo: dict[int, Any] = {}
    if share_tensors:
        memo.update({id(t): t for t in (*model.parameters(), *model.buffers())})
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    try:
        owned = copy.deepcopy(model, memo)
    except (TypeError, RuntimeError, AttributeError) as err:
        raise InputError(
            f"cannot copy {type(model).__name__} ({type(err).__name__}: {err}): it holds an object copy.deepcopy "
            "refuses; convert it with copy=False (the VAE then shares the model's modules and parameters)"
        ) from err
    if not share_tensors:
        for p in owned.parameters():
            p.grad = None
    return owned


def first_tensor(module: nn.Module) -> torch.Tensor | None:
    """The module's first floating-point parameter (or buffer): where and in what dtype it computes."""
    tensors = (*module.parameters(), *module.buffers())
    return next((t for t in tensors if t.is_floating_point()), None)
