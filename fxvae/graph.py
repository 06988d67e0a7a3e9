"""Read-only analyses of a shape-propagated fx graph: widths, data paths, separators, layers.

Nothing here changes a graph. Shapes come from ``node.meta["tensor_meta"]`` as written by
:func:`fxvae.tracing.propagate_shapes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxvae.errors import BottleneckError
from fxvae.tracing import RECORD_META

Edge = tuple[fx.Node, fx.Node]


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """Full shape of a node whose value is one tensor, else None."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "dtype", None) is not None and meta.dtype.is_floating_point


def carries_data(node: fx.Node) -> bool:
    """Whether the node's value holds tensors (a tensor or a container of them).

    Python numbers and sizes (``x.size(0)`` feeding a reshape) move no per-sample data, so an edge
    out of such a node never counts as a path around the bottleneck.
    """
    return "tensor_meta" in node.meta


def per_sample_shape(node: fx.Node, batch: int) -> tuple[int, ...] | None:
    """Shape without the batch dimension, or None where dim 0 is not the batch."""
    shape = tensor_shape(node)
    if shape is None or len(shape) == 0 or shape[0] != batch:
        return None
    return shape[1:]


def width(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def data_inputs(node: fx.Node) -> list[fx.Node]:
    """The node's inputs that carry tensors, in argument order, without repeats."""
    return list(dict.fromkeys(n for n in node.all_input_nodes if carries_data(n)))


def output_leaves(graph: fx.Graph) -> list[fx.Node]:
    """Tensor nodes returned by the graph, looking through the nodes that rebuild output classes."""
    leaves: list[fx.Node] = []
    pending: list[fx.Node] = list(graph.output_node().all_input_nodes)
    while pending:
        node = pending.pop(0)
        if node.meta.get(RECORD_META):
            pending[:0] = node.all_input_nodes
        elif node not in leaves:
            leaves.append(node)
    return leaves


def reconstruction(graph: fx.Graph, source: fx.Node) -> fx.Node:
    """The output leaf with the data input's shape, else the widest floating-point leaf."""
    leaves = [n for n in output_leaves(graph) if is_float_tensor(n) and n is not source]
    if not leaves:
        raise BottleneckError("the model returns no floating-point tensor to treat as the reconstruction")
    same = [n for n in leaves if tensor_shape(n) == tensor_shape(source)]
    return same[0] if same else max(leaves, key=lambda n: width(tensor_shape(n)))


def data_path(graph: fx.Graph, source: fx.Node, sink: fx.Node) -> list[fx.Node]:
    """Nodes on some data-carrying path from ``source`` to ``sink``, in topological order."""
    forward = {source}
    for node in graph.nodes:
        if node is not source and any(n in forward for n in data_inputs(node)):
            forward.add(node)
    if sink not in forward:
        return []
    backward = {sink}
    for node in reversed(graph.nodes):
        if node in backward:
            backward.update(n for n in data_inputs(node) if n in forward)
    return [n for n in graph.nodes if n in forward and n in backward]


def crossing_edges(path: list[fx.Node]) -> dict[fx.Node, Edge | None]:
    """For each inner node of a path: None if every source-to-sink path passes it, else an edge around it.

    Nodes are numbered in topological order; v lies on every path iff no path edge (a -> b) has
    index(a) < index(v) < index(b). One sweep with a running maximum of the farthest user index.
    """
    index = {node: i for i, node in enumerate(path)}
    result: dict[fx.Node, Edge | None] = {}
    reach, reach_edge = -1, None
    for i, node in enumerate(path):
        if 0 < i < len(path) - 1:
            result[node] = reach_edge if reach > i else None
        for user in node.users:
            j = index.get(user, -1)
            if j > reach:
                reach, reach_edge = j, (node, user)
    return result


@dataclass(frozen=True)
class LayerKind:
    """A parametrized layer fxvae can seed a mu head from, as a module and as functional calls."""

    name: str
    modules: tuple[type[nn.Module], ...]
    functions: frozenset[object]
    channel_dim: int
    """Dimension of the layer's output that its bias runs along."""


LAYER_KINDS: tuple[LayerKind, ...] = (
    LayerKind("linear", (nn.Linear,), frozenset({F.linear, torch.ops.aten.linear.default}), -1),
    LayerKind(
        "conv",
        (nn.Conv1d, nn.Conv2d, nn.Conv3d),
        frozenset(
            {
                F.conv1d,
                F.conv2d,
                F.conv3d,
                torch.ops.aten.conv1d.default,
                torch.ops.aten.conv2d.default,
                torch.ops.aten.conv3d.default,
            }
        ),
        1,
    ),
    LayerKind(
        "conv_transpose",
        (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
        frozenset(
            {
                F.conv_transpose1d,
                F.conv_transpose2d,
                F.conv_transpose3d,
                torch.ops.aten.conv_transpose1d.default,
                torch.ops.aten.conv_transpose2d.input,
                torch.ops.aten.conv_transpose3d.input,
            }
        ),
        1,
    ),
)

SUPPORTED_LAYERS = "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d (as modules or functional calls)"

WEIGHT_ARG, BIAS_ARG = 1, 2
"""Positions of weight and bias in every functional layer signature above."""


def functional_arg(node: fx.Node, index: int, name: str) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name)


def layer_kind(gm: fx.GraphModule, node: fx.Node) -> LayerKind | None:
    """The kind of parametrized layer ``node`` calls, or None.

    A functional call counts only when its weight is a stored tensor (a ``get_attr``), so that the mu
    head can take a copy of it.
    """
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return next((k for k in LAYER_KINDS if isinstance(module, k.modules)), None)
    if node.op == "call_function":
        weight = functional_arg(node, WEIGHT_ARG, "weight")
        if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
            return None
        return next((k for k in LAYER_KINDS if node.target in k.functions), None)
    return None


_DROPOUT_FUNCTIONS = frozenset(
    {
        F.dropout,
        F.dropout1d,
        F.dropout2d,
        F.dropout3d,
        F.alpha_dropout,
        F.feature_alpha_dropout,
        torch.ops.aten.dropout.default,
        torch.ops.aten.feature_dropout.default,
        torch.ops.aten.alpha_dropout.default,
        torch.ops.aten.feature_alpha_dropout.default,
    }
)


def is_dropout(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Dropout is a regulariser between encoder and decoder, never part of the latent's activation."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.modules.dropout._DropoutNd)
    return node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS


def module_path(node: fx.Node, strip: str = "") -> str | None:
    """Path of the module that produced the node: the called module, or the innermost on the stack."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = next(reversed(stack.values()))[0]
    return path.removeprefix(strip) if strip and path.startswith(strip) else path


def attr_owner_path(target: str) -> str:
    """``enc.2.weight`` -> ``enc.2``: the module path of a functional layer given its weight."""
    owner, _, name = target.rpartition(".")
    return owner if name == "weight" and owner else target


def tensor_uses(gm: fx.GraphModule, nodes: Iterable[fx.Node]) -> dict[int, int]:
    """How many graph nodes read each parameter or buffer (by object identity)."""
    counts: dict[int, int] = {}
    for node in nodes:
        if node.op == "call_module":
            tensors = list(gm.get_submodule(node.target).parameters())
        elif node.op == "get_attr":
            owner, _, name = node.target.rpartition(".")
            value = getattr(gm.get_submodule(owner) if owner else gm, name)
            tensors = [value] if isinstance(value, torch.Tensor) else []
        else:
            continue
        for t in tensors:
            counts[id(t)] = counts.get(id(t), 0) + 1
    return counts
